/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Sets up the tp_btf backstop of build/tracker.bpf.o after load (bpf/tracker.bpf.c, above
 * handle_set_state_btf): runs its two setup iterators so that the backstop can read the first
 * state-change program's per-CPU guard. Shared by the addon (bpf_session.cc) and the benchmark's
 * floor consumer, so that both run the same kernel side. Plain C.
 */
#ifndef SCOPE_BACKSTOP_SETUP_H
#define SCOPE_BACKSTOP_SETUP_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct bpf_object;

/* The setup iterators' sections: loaded only with the tp_btf state change, never attached as hooks. */
#define BACKSTOP_FIND_FIRST_SECTION "iter/bpf_prog"
#define BACKSTOP_FIND_CPU_BASE_SECTION "iter/bpf_map"

/* Whether `section` is one of the setup iterators (loaded, but run by backstop_setup, never attached). */
bool backstop_is_setup_section(const char *section);

/* Whether the running kernel has both iterator targets (iter/bpf_map 5.8+, iter/bpf_prog 5.9+). */
bool backstop_iterators_available(void);

/*
 * After bpf_object__load, before the state-change programs are attached. Returns true when the
 * backstop now reads the first program's guard; false, with `why` saying why not, when it will do
 * nothing (the first program's skips are then counted as missed), including when the tp_btf state
 * program was not loaded at all (classic tracepoints). Never fatal.
 */
bool backstop_setup(struct bpf_object *obj, char *why, size_t why_len);

#ifdef __cplusplus
}
#endif

#endif /* SCOPE_BACKSTOP_SETUP_H */
