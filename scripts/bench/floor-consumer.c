// SPDX-License-Identifier: Apache-2.0
/*
 * floor-consumer: the cheapest possible reader of build/tracker.bpf.o, to measure
 * what the kernel side costs on its own (the "floor" the Node addon is compared to).
 *
 * Loads the object and attaches the same programs as the plugin (the choice is
 * native/src/attach_plan.c's, shared with the addon: tp_btf where the kernel takes it), drains the ring buffer every N ms (on a timer, no epoll; the object's submissions leave the wake-up to the kernel, as for the plugin), counts
 * records by type, and on SIGINT/SIGTERM prints one JSON line to stdout:
 *   {"events":..,"connect":..,"accept":..,"close":..,"lost":..,"failedConnects":..,
 *    "connectNoPid":..,"acceptNoSock":..,"seconds":..,"cpuUserMs":..,"cpuSysMs":..}
 *
 * usage: floor-consumer [-o build/tracker.bpf.o] [-i drain_ms] [-r ring_bytes] [-w] [-c]
 *   -w  wait in epoll for the kernel's wake-ups instead of the timer
 *   -c  classic tracepoints only (never tp_btf), to compare the two
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/types.h>

#include "../../bpf/tracker.h"
#include "../../native/src/attach_plan.h"
#include "../../native/src/backstop_setup.h"

static volatile sig_atomic_t stop_requested;
static uint64_t n_events, n_by_type[4];

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static int on_record(void *ctx, void *data, size_t size)
{
	(void)ctx;
	if (size >= sizeof(struct tracker_event)) {
		const struct tracker_event *e = data;

		n_events++;
		if (e->type < 4)
			n_by_type[e->type]++;
	}
	return 0;
}

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

static bool dir_exists(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* libbpf attaches tracepoints through tracefs; mount it if nobody did. */
static const char *tracefs_events(void)
{
	if (dir_exists("/sys/kernel/tracing/events"))
		return "/sys/kernel/tracing/events";
	if (dir_exists("/sys/kernel/debug/tracing/events"))
		return "/sys/kernel/debug/tracing/events";
	if (mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, NULL) != 0) {
		fprintf(stderr, "floor-consumer: tracefs is not mounted and mount on /sys/kernel/tracing failed: %s\n",
			strerror(errno));
		return NULL;
	}
	return "/sys/kernel/tracing/events";
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	const char *obj_path = "build/tracker.bpf.o";
	unsigned drain_ms = 20;
	unsigned long ring_bytes = 0;
	bool wakeup = false, tracepoints_only = false;
	struct bpf_link *links[16];
	int n_links = 0, opt, err;

	while ((opt = getopt(argc, argv, "o:i:r:wc")) != -1) {
		switch (opt) {
		case 'o': obj_path = optarg; break;
		case 'i': drain_ms = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'r': ring_bytes = strtoul(optarg, NULL, 0); break;
		case 'w': wakeup = true; break;
		case 'c': tracepoints_only = true; break;
		default:
			fprintf(stderr, "usage: %s [-o obj] [-i drain_ms] [-r ring_bytes] [-w] [-c]\n", argv[0]);
			return 2;
		}
	}
	libbpf_set_print(libbpf_log);

	const char *events = tracefs_events();
	if (!events)
		return 1;

	struct attach_plan plan;
	struct bpf_object *obj = NULL;
	struct bpf_program *prog;
	char why[256];

	attach_plan_init(&plan, events, tracepoints_only);
	for (;;) { /* one attempt per plan: a refused program falls back, with a fresh object */
		const char *failed = NULL;

		n_links = 0;
		obj = bpf_object__open_file(obj_path, NULL);
		if (!obj) {
			fprintf(stderr, "floor-consumer: open %s: %s\n", obj_path, strerror(errno));
			return 1;
		}
		if (attach_plan_apply(&plan, obj, why, sizeof(why)) != 0) {
			fprintf(stderr, "floor-consumer: %s\n", why);
			return 1;
		}
		if (ring_bytes) {
			err = bpf_map__set_max_entries(bpf_object__find_map_by_name(obj, "events"), ring_bytes);
			if (err) {
				fprintf(stderr, "floor-consumer: ring size %lu: %s\n", ring_bytes, strerror(-err));
				return 1;
			}
		}
		err = bpf_object__load(obj);
		if (err) {
			snprintf(why, sizeof(why), "load: %s", strerror(-err));
		} else {
			/* The same kernel side as the plugin's: its backstop set up before anything is attached. */
			char backstop_why[ATTACH_PLAN_REASON_LEN] = "";

			if (!backstop_setup(obj, backstop_why, sizeof(backstop_why)))
				fprintf(stderr, "floor-consumer: backstop off: %s\n", backstop_why);
			bpf_object__for_each_program(prog, obj) {
				if (!bpf_program__autoload(prog) || backstop_is_setup_section(bpf_program__section_name(prog)))
					continue;
				struct bpf_link *l = bpf_program__attach(prog);
				if (!l) {
					failed = bpf_program__section_name(prog);
					snprintf(why, sizeof(why), "attach: %s", strerror(errno));
					err = -1;
					break;
				}
				if (n_links < 16)
					links[n_links++] = l;
			}
		}
		if (!err)
			break;
		char failed_copy[128] = "";

		if (failed)
			snprintf(failed_copy, sizeof(failed_copy), "%s", failed);
		for (int i = 0; i < n_links; i++)
			bpf_link__destroy(links[i]);
		bpf_object__close(obj);
		if (!attach_plan_fall_back(&plan, events, failed ? failed_copy : NULL, why)) {
			fprintf(stderr, "floor-consumer: %s%s%s\n", failed ? failed_copy : "", failed ? ": " : "", why);
			return 1;
		}
	}
	for (int i = 0; i < plan.n_hooks; i++)
		fprintf(stderr, "floor-consumer: %s: %s (%s)\n", plan.hooks[i].hook,
			plan.hooks[i].type ? plan.hooks[i].type : "not attached", plan.hooks[i].reason);

	int rb_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "events"));
	int cnt_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "counters"));
	struct ring_buffer *rb = ring_buffer__new(rb_fd, on_record, NULL, NULL);
	if (!rb) {
		fprintf(stderr, "floor-consumer: ring_buffer__new: %s\n", strerror(errno));
		return 1;
	}

	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	fprintf(stderr, "floor-consumer: attached %d programs, draining every %u ms%s\n", n_links, drain_ms,
		wakeup ? " (wakeup mode)" : "");

	double t0 = now_s();
	while (!stop_requested) {
		if (wakeup) {
			err = ring_buffer__poll(rb, (int)drain_ms);
		} else {
			struct timespec ts = { drain_ms / 1000, (long)(drain_ms % 1000) * 1000000L };

			nanosleep(&ts, NULL); /* a signal cuts it short: fine */
			err = ring_buffer__consume(rb);
		}
		if (err < 0 && err != -EINTR) {
			fprintf(stderr, "floor-consumer: ring buffer: %s\n", strerror(-err));
			break;
		}
	}
	for (int i = 0; i < n_links; i++)
		bpf_link__destroy(links[i]);
	ring_buffer__consume(rb);
	double secs = now_s() - t0;

	int ncpu = libbpf_num_possible_cpus();
	uint64_t totals[TRACKER_COUNTER_MAX] = { 0 };
	uint64_t *vals = calloc(ncpu > 0 ? ncpu : 1, sizeof(uint64_t));
	for (__u32 k = 0; vals && ncpu > 0 && k < TRACKER_COUNTER_MAX; k++) {
		if (bpf_map_lookup_elem(cnt_fd, &k, vals) == 0)
			for (int c = 0; c < ncpu; c++)
				totals[k] += vals[c];
	}
	free(vals);

	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("{\"events\":%llu,\"connect\":%llu,\"accept\":%llu,\"close\":%llu,\"lost\":%llu,"
	       "\"failedConnects\":%llu,\"connectNoPid\":%llu,\"acceptNoSock\":%llu,\"seconds\":%.3f,"
	       "\"cpuUserMs\":%.1f,\"cpuSysMs\":%.1f}\n",
	       (unsigned long long)n_events, (unsigned long long)n_by_type[TRACKER_EVENT_CONNECT],
	       (unsigned long long)n_by_type[TRACKER_EVENT_ACCEPT], (unsigned long long)n_by_type[TRACKER_EVENT_CLOSE],
	       (unsigned long long)totals[TRACKER_COUNTER_LOST],
	       (unsigned long long)totals[TRACKER_COUNTER_FAILED_CONNECT],
	       (unsigned long long)totals[TRACKER_COUNTER_CONNECT_NO_PID],
	       (unsigned long long)totals[TRACKER_COUNTER_ACCEPT_NO_SOCK], secs,
	       ru.ru_utime.tv_sec * 1e3 + ru.ru_utime.tv_usec / 1e3,
	       ru.ru_stime.tv_sec * 1e3 + ru.ru_stime.tv_usec / 1e3);
	fflush(stdout);
	ring_buffer__free(rb);
	bpf_object__close(obj);
	return 0;
}
