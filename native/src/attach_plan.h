/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Which program of build/tracker.bpf.o serves each hook on this kernel, and why. Shared by the
 * addon (bpf_session.cc) and the benchmark's floor consumer (scripts/bench/floor-consumer.c), so
 * that both run the same programs. Plain C: the floor consumer is C.
 *
 * Use: attach_plan_init, then per attempt: open the object, attach_plan_apply, load and attach;
 * on a failure, attach_plan_fall_back and try again with a fresh object (libbpf cannot reload one).
 */
#ifndef SCOPE_ATTACH_PLAN_H
#define SCOPE_ATTACH_PLAN_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct bpf_object;

#define ATTACH_PLAN_MAX_HOOKS 4
#define ATTACH_PLAN_REASON_LEN 320

struct attach_choice {
	const char *hook;     /* "inet_sock_set_state", "sys_exit_accept", "sys_exit_accept4" */
	bool required;        /* the tracker cannot run without it */
	int candidate;        /* index into the hook's candidates; -1: nothing usable, not attached */
	const char *type;     /* "tp_btf" or "tracepoint"; NULL when not attached */
	const char *section;  /* ELF section of the chosen program; NULL when not attached */
	char reason[ATTACH_PLAN_REASON_LEN];
};

struct attach_plan {
	int n_hooks;
	struct attach_choice hooks[ATTACH_PLAN_MAX_HOOKS];
	/* Load the backstop's setup iterators (backstop_setup.h) with a tp_btf state change. */
	bool backstop_iterators;
	/* Why they are not loaded, when they are not ("" otherwise). */
	char backstop_off[ATTACH_PLAN_REASON_LEN];
};

/*
 * First choice per hook from what the kernel offers: BTF raw tracepoints where the kernel's BTF
 * has the tracepoint's btf_trace_* type (unless tracepoints_only), else the classic tracepoint if
 * `tracefs_events`/<category>/<name> exists.
 */
void attach_plan_init(struct attach_plan *plan, const char *tracefs_events, bool tracepoints_only);

/*
 * Marks for loading exactly the chosen program of each hook. Returns 0, or -1 with `err` set when a
 * required hook has no usable program (on this kernel or in this object).
 */
int attach_plan_apply(const struct attach_plan *plan, struct bpf_object *obj, char *err, size_t err_len);

/*
 * After a failed load (failed_section NULL: the backstop's setup iterators are dropped first, then
 * every hook that has a fallback falls back) or a failed attach of `failed_section`: moves those
 * hooks to their next candidate, recording `why`. Returns false when nothing was left to drop or
 * move (the failure is final).
 */
bool attach_plan_fall_back(struct attach_plan *plan, const char *tracefs_events, const char *failed_section,
			   const char *why);

/* The hook served by `section`, or NULL. */
const struct attach_choice *attach_plan_find(const struct attach_plan *plan, const char *section);

#ifdef __cplusplus
}
#endif

#endif /* SCOPE_ATTACH_PLAN_H */
