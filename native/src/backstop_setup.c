// SPDX-License-Identifier: Apache-2.0
#include "backstop_setup.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* bpf/tracker.bpf.c's struct backstop_view. */
struct backstop_view {
	uint32_t first_id;
	uint32_t cpu_base_id;
	uint64_t first_active;
	uint64_t cpu_base_ptr;
};

bool backstop_is_setup_section(const char *section)
{
	return strcmp(section, BACKSTOP_FIND_FIRST_SECTION) == 0 || strcmp(section, BACKSTOP_FIND_CPU_BASE_SECTION) == 0;
}

bool backstop_iterators_available(void)
{
	struct btf *vmlinux = btf__load_vmlinux_btf();
	bool ok;

	if (libbpf_get_error(vmlinux))
		return false;
	ok = btf__find_by_name_kind(vmlinux, "bpf_iter_bpf_prog", BTF_KIND_FUNC) >= 0 &&
	     btf__find_by_name_kind(vmlinux, "bpf_iter_bpf_map", BTF_KIND_FUNC) >= 0;
	btf__free(vmlinux);
	return ok;
}

static struct bpf_program *find_program(struct bpf_object *obj, const char *section)
{
	struct bpf_program *prog;

	bpf_object__for_each_program(prog, obj)
		if (strcmp(bpf_program__section_name(prog), section) == 0)
			return prog;
	return NULL;
}

/* Runs one iterator program to its end (it writes what it finds into backstop_view). */
static int run_iterator(struct bpf_program *prog)
{
	struct bpf_link *link = bpf_program__attach_iter(prog, NULL);
	char buf[256];
	int fd, err = 0;

	if (!link)
		return -(errno ? errno : EINVAL);
	fd = bpf_iter_create(bpf_link__fd(link));
	if (fd < 0) {
		err = -errno;
	} else {
		ssize_t n;

		while ((n = read(fd, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR))
			;
		if (n < 0)
			err = -errno;
		close(fd);
	}
	bpf_link__destroy(link);
	return err;
}

static uint32_t object_id(int fd, bool map)
{
	if (map) {
		struct bpf_map_info info = {0};
		__u32 len = sizeof(info);

		return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
	}
	struct bpf_prog_info info = {0};
	__u32 len = sizeof(info);

	return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

bool backstop_setup(struct bpf_object *obj, char *why, size_t why_len)
{
	struct bpf_program *find_first = find_program(obj, BACKSTOP_FIND_FIRST_SECTION);
	struct bpf_program *find_base = find_program(obj, BACKSTOP_FIND_CPU_BASE_SECTION);
	struct bpf_program *first = bpf_object__find_program_by_name(obj, "handle_set_state_btf");
	struct bpf_map *view_map = bpf_object__find_map_by_name(obj, "backstop_view");
	struct bpf_map *base_map = bpf_object__find_map_by_name(obj, "cpu_base");
	struct backstop_view view = {0};
	uint32_t zero = 0;
	int err;

	if (first && !bpf_program__autoload(first)) {
		snprintf(why, why_len, "the tp_btf state program is not loaded");
		return false;
	}
	if (!find_first || !find_base || !first || !view_map || !base_map) {
		snprintf(why, why_len, "the object has no backstop setup (built from another bpf/tracker.bpf.c?)");
		return false;
	}
	if (!bpf_program__autoload(find_first) || bpf_program__fd(find_first) < 0 || bpf_program__fd(find_base) < 0) {
		snprintf(why, why_len, "the kernel has no iter/bpf_prog or iter/bpf_map (5.9+) to find the first program's guard");
		return false;
	}
	view.first_id = object_id(bpf_program__fd(first), false);
	view.cpu_base_id = object_id(bpf_map__fd(base_map), true);
	if (!view.first_id || !view.cpu_base_id) {
		snprintf(why, why_len, "cannot read the ids of the first program and of cpu_base: %s", strerror(errno));
		return false;
	}
	if (bpf_map_update_elem(bpf_map__fd(view_map), &zero, &view, BPF_ANY) != 0) {
		snprintf(why, why_len, "cannot write backstop_view: %s", strerror(errno));
		return false;
	}
	if ((err = run_iterator(find_first)) != 0 || (err = run_iterator(find_base)) != 0) {
		snprintf(why, why_len, "a setup iterator failed: %s", strerror(-err));
		return false;
	}
	if (bpf_map_lookup_elem(bpf_map__fd(view_map), &zero, &view) != 0) {
		snprintf(why, why_len, "cannot read backstop_view: %s", strerror(errno));
		return false;
	}
	if (!view.first_active) {
		snprintf(why, why_len, "the kernel's struct bpf_prog has no per-program guard (active): raw tracepoints are never skipped for recursion here");
		return false;
	}
	if (!view.cpu_base_ptr) {
		snprintf(why, why_len, "cpu_base's per-CPU pointer was not found");
		return false;
	}
	return true;
}
