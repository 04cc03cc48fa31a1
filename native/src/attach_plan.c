// SPDX-License-Identifier: Apache-2.0
#include "attach_plan.h"
#include "backstop_setup.h"

#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

struct candidate {
	const char *type;      /* "tp_btf" | "tracepoint" */
	const char *section;   /* program section in bpf/tracker.bpf.c */
	const char *available; /* tp_btf: the btf_trace_* typedef; tracepoint: the tracefs event */
	const char *why;       /* why this kind, when it is chosen first */
};

struct hook_def {
	const char *hook;
	bool required;
	int n;
	struct candidate candidates[2];
};

static const struct hook_def kHooks[] = {
	{"inet_sock_set_state", true, 2, {
		{"tp_btf", "tp_btf/inet_sock_set_state", "btf_trace_inet_sock_set_state",
		 "BTF raw tracepoint: guarded only against itself, not skipped while another BPF program runs on the CPU"},
		{"tracepoint", "tracepoint/sock/inet_sock_set_state", "sock/inet_sock_set_state",
		 "classic tracepoint"},
	}},
	/*
	 * The accept exits stay classic: the per-syscall events are ftrace's, with no BTF raw tracepoint
	 * of their own (tp_btf/sys_exit would run on every system call of the machine). They run in
	 * process context at the syscall's exit, where nothing else of ours can be running underneath.
	 */
	{"sys_exit_accept", false, 1, {
		{"tracepoint", "tracepoint/syscalls/sys_exit_accept", "syscalls/sys_exit_accept",
		 "classic tracepoint: the syscall's own event (tp_btf has only sys_exit, every system call)"},
	}},
	{"sys_exit_accept4", false, 1, {
		{"tracepoint", "tracepoint/syscalls/sys_exit_accept4", "syscalls/sys_exit_accept4",
		 "classic tracepoint: the syscall's own event (tp_btf has only sys_exit, every system call)"},
	}},
};
#define N_HOOKS ((int)(sizeof(kHooks) / sizeof(kHooks[0])))

static bool dir_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool tracefs_event_exists(const char *events, const char *event)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", events, event);
	return dir_exists(path);
}

/*
 * Is candidate `c` usable here? Writes why not into `why_not`. `vmlinux` is the kernel's BTF (NULL if
 * it could not be read).
 */
static bool usable(const struct candidate *c, const struct btf *vmlinux, const char *events, char *why_not,
		   size_t len)
{
	if (strcmp(c->type, "tp_btf") == 0) {
		if (!vmlinux) {
			snprintf(why_not, len, "tp_btf unavailable: kernel BTF unreadable");
			return false;
		}
		if (btf__find_by_name_kind(vmlinux, c->available, BTF_KIND_TYPEDEF) < 0) {
			snprintf(why_not, len, "tp_btf unavailable: kernel BTF has no %s (needs 5.5+)", c->available);
			return false;
		}
		return true;
	}
	if (!tracefs_event_exists(events, c->available)) {
		snprintf(why_not, len, "no tracefs event %s", c->available);
		return false;
	}
	return true;
}

static const struct hook_def *def_of(const struct attach_choice *choice)
{
	for (int i = 0; i < N_HOOKS; i++)
		if (strcmp(kHooks[i].hook, choice->hook) == 0)
			return &kHooks[i];
	return NULL;
}

/* From candidate `from` on, picks the first usable one; `prefix` explains why earlier ones were passed over. */
static void choose_from(struct attach_choice *choice, const struct hook_def *def, int from, const struct btf *vmlinux,
			const char *events, const char *prefix)
{
	char passed[ATTACH_PLAN_REASON_LEN];

	snprintf(passed, sizeof(passed), "%s", prefix ? prefix : "");
	choice->candidate = -1;
	choice->type = NULL;
	choice->section = NULL;
	for (int i = from; i < def->n; i++) {
		const struct candidate *c = &def->candidates[i];
		char why_not[160];

		if (usable(c, vmlinux, events, why_not, sizeof(why_not))) {
			choice->candidate = i;
			choice->type = c->type;
			choice->section = c->section;
			if (passed[0])
				snprintf(choice->reason, sizeof(choice->reason), "%.150s; %.160s", passed, c->why);
			else
				snprintf(choice->reason, sizeof(choice->reason), "%s", c->why);
			return;
		}
		size_t used = strlen(passed);
		snprintf(passed + used, sizeof(passed) - used, "%s%s", used ? "; " : "", why_not);
	}
	snprintf(choice->reason, sizeof(choice->reason), "not attached: %s", passed[0] ? passed : "no candidate");
}

void attach_plan_init(struct attach_plan *plan, const char *tracefs_events, bool tracepoints_only)
{
	struct btf *vmlinux = btf__load_vmlinux_btf();

	if (libbpf_get_error(vmlinux))
		vmlinux = NULL;
	memset(plan, 0, sizeof(*plan));
	for (int i = 0; i < N_HOOKS && i < ATTACH_PLAN_MAX_HOOKS; i++) {
		const struct hook_def *def = &kHooks[i];
		struct attach_choice *choice = &plan->hooks[plan->n_hooks++];
		int from = 0;
		const char *prefix = NULL;

		choice->hook = def->hook;
		choice->required = def->required;
		if (tracepoints_only && strcmp(def->candidates[0].type, "tp_btf") == 0) {
			from = 1;
			prefix = "tp_btf not tried: classic tracepoints asked for";
		}
		choose_from(choice, def, from, vmlinux, tracefs_events, prefix);
	}
	btf__free(vmlinux);
	plan->backstop_iterators = backstop_iterators_available();
	if (!plan->backstop_iterators)
		snprintf(plan->backstop_off, sizeof(plan->backstop_off), "the kernel has no iter/bpf_prog or iter/bpf_map (5.9+)");
}


int attach_plan_apply(const struct attach_plan *plan, struct bpf_object *obj, char *err, size_t err_len)
{
	struct bpf_program *prog;

	for (int i = 0; i < plan->n_hooks; i++) {
		const struct attach_choice *choice = &plan->hooks[i];

		if (choice->candidate < 0) {
			if (choice->required) {
				snprintf(err, err_len, "attach %s: %s", choice->hook, choice->reason);
				return -1;
			}
			continue;
		}
		bool found = false;
		bpf_object__for_each_program(prog, obj)
			found = found || strcmp(bpf_program__section_name(prog), choice->section) == 0;
		if (!found && choice->required) {
			snprintf(err, err_len, "the object has no program in section %s", choice->section);
			return -1;
		}
	}
	/* kHooks[0]: the state change, the hook the backstop serves. */
	const struct attach_choice *state = plan->n_hooks > 0 ? &plan->hooks[0] : NULL;
	bool iterators = plan->backstop_iterators && state && state->type && strcmp(state->type, "tp_btf") == 0;

	bpf_object__for_each_program(prog, obj) {
		const char *section = bpf_program__section_name(prog);

		bpf_program__set_autoload(prog, backstop_is_setup_section(section) ? iterators : attach_plan_find(plan, section) != NULL);
	}
	return 0;
}

bool attach_plan_fall_back(struct attach_plan *plan, const char *tracefs_events, const char *failed_section,
			   const char *why)
{
	struct btf *vmlinux = NULL;
	bool moved = false;

	/* A load the setup iterators may have failed: try without them before giving up tp_btf. */
	if (!failed_section && plan->backstop_iterators) {
		plan->backstop_iterators = false;
		snprintf(plan->backstop_off, sizeof(plan->backstop_off), "its setup iterators were refused: %.250s", why);
		return true;
	}

	for (int i = 0; i < plan->n_hooks; i++) {
		struct attach_choice *choice = &plan->hooks[i];
		const struct hook_def *def = def_of(choice);

		if (!def || choice->candidate < 0 || choice->candidate + 1 >= def->n)
			continue;
		if (failed_section && strcmp(failed_section, choice->section) != 0)
			continue;
		char prefix[ATTACH_PLAN_REASON_LEN];

		snprintf(prefix, sizeof(prefix), "%s refused: %s", choice->type, why);
		choose_from(choice, def, choice->candidate + 1, vmlinux, tracefs_events, prefix);
		moved = true;
	}
	return moved;
}

const struct attach_choice *attach_plan_find(const struct attach_plan *plan, const char *section)
{
	for (int i = 0; i < plan->n_hooks; i++)
		if (plan->hooks[i].section && strcmp(plan->hooks[i].section, section) == 0)
			return &plan->hooks[i];
	return NULL;
}
