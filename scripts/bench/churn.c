// SPDX-License-Identifier: Apache-2.0
/*
 * churn: loopback TCP connection churn generator.
 *
 * P worker threads share L listeners on 127.0.0.1 (or ::1 with -6); each loops
 *   socket -> connect -> accept -> close(server side) -> close(client side)
 * round-robin over the listeners, as fast as it can for D seconds, then one JSON
 * line goes to stdout:
 *   {"connections":N,"seconds":S,"connectionsPerSecond":R,"workers":P,"listeners":L,
 *    "close":"fin"|"rst","errors":E,"cpuUserMs":..,"cpuSysMs":..,"cpuUsPerConnection":..}
 * Each connection is 4 tracker events (CONNECT, ACCEPT, 2x CLOSE).
 *
 * The server side closes first so TIME_WAIT lands on the listener's 4-tuples and
 * the client's ephemeral ports are free again at once (no port exhaustion); several
 * listener ports keep a reused client port from meeting its own TIME_WAIT twin.
 * -r closes the server side with a RST (SO_LINGER 0): no TIME_WAIT at all.
 * The CPU figures are this process's own (user + system, which includes the BPF
 * programs that run in its syscalls; softirq work is charged to whoever ran it).
 *
 * usage: churn [-d seconds] [-p workers] [-l listeners] [-r] [-6]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_LISTENERS 64

static int listeners[MAX_LISTENERS];
static struct sockaddr_storage server_addrs[MAX_LISTENERS];
static socklen_t server_len;
static int n_listeners = 16;
static int family = AF_INET;
static bool abortive;
static atomic_bool running = true;
static atomic_ulong total_conns, total_errors;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *worker(void *arg)
{
	unsigned long conns = 0, errors = 0;
	unsigned k = (unsigned)(uintptr_t)arg;
	const struct linger rst = { .l_onoff = 1, .l_linger = 0 };

	while (atomic_load_explicit(&running, memory_order_relaxed)) {
		int c = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

		k = (k + 1) % (unsigned)n_listeners;
		if (c < 0) {
			errors++;
			continue;
		}
		if (connect(c, (struct sockaddr *)&server_addrs[k], server_len) != 0) {
			errors++;
			close(c);
			continue;
		}
		/*
		 * Another worker may take our connection and we theirs: same count. Every
		 * accept on listener k follows a connect to k, so it never waits for long.
		 */
		int a = accept4(listeners[k], NULL, NULL, SOCK_CLOEXEC);

		if (a < 0) {
			errors++;
		} else {
			if (abortive)
				setsockopt(a, SOL_SOCKET, SO_LINGER, &rst, sizeof(rst));
			close(a);
		}
		close(c);
		conns++;
	}
	atomic_fetch_add(&total_conns, conns);
	atomic_fetch_add(&total_errors, errors);
	return NULL;
}

int main(int argc, char **argv)
{
	double duration = 5;
	int workers = 2, opt;

	while ((opt = getopt(argc, argv, "d:p:l:r6")) != -1) {
		switch (opt) {
		case 'd': duration = atof(optarg); break;
		case 'p': workers = atoi(optarg); break;
		case 'l': n_listeners = atoi(optarg); break;
		case 'r': abortive = true; break;
		case '6': family = AF_INET6; break;
		default:
			fprintf(stderr, "usage: %s [-d seconds] [-p workers] [-l listeners] [-r] [-6]\n", argv[0]);
			return 2;
		}
	}
	if (workers < 1 || workers > 1024 || duration <= 0 || n_listeners < 1 || n_listeners > MAX_LISTENERS) {
		fprintf(stderr, "churn: bad -p, -l or -d\n");
		return 2;
	}

	for (int i = 0; i < n_listeners; i++) {
		int one = 1;
		struct sockaddr_storage *sa = &server_addrs[i];

		listeners[i] = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (listeners[i] < 0) {
			perror("churn: socket");
			return 1;
		}
		setsockopt(listeners[i], SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		memset(sa, 0, sizeof(*sa));
		if (family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)sa;

			sin->sin_family = AF_INET;
			sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			server_len = sizeof(*sin);
		} else {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)sa;

			sin6->sin6_family = AF_INET6;
			sin6->sin6_addr = in6addr_loopback;
			server_len = sizeof(*sin6);
		}
		if (bind(listeners[i], (struct sockaddr *)sa, server_len) != 0 ||
		    listen(listeners[i], 4096) != 0 ||
		    getsockname(listeners[i], (struct sockaddr *)sa, &server_len) != 0) {
			perror("churn: listen");
			return 1;
		}
	}

	pthread_t *tids = calloc((size_t)workers, sizeof(*tids));
	if (!tids)
		return 1;
	struct rusage r0, r1;
	getrusage(RUSAGE_SELF, &r0);
	double t0 = now_s();

	for (int i = 0; i < workers; i++) {
		if (pthread_create(&tids[i], NULL, worker, (void *)(uintptr_t)i) != 0) {
			perror("churn: pthread_create");
			return 1;
		}
	}
	struct timespec ts = { (time_t)duration, (long)((duration - (time_t)duration) * 1e9) };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
	atomic_store(&running, false);
	for (int i = 0; i < workers; i++)
		pthread_join(tids[i], NULL);
	double secs = now_s() - t0;
	getrusage(RUSAGE_SELF, &r1);

	double user_ms = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) * 1e3 + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e3;
	double sys_ms = (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1e3 + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e3;
	unsigned long conns = atomic_load(&total_conns);

	printf("{\"connections\":%lu,\"seconds\":%.3f,\"connectionsPerSecond\":%.0f,\"workers\":%d,"
	       "\"listeners\":%d,\"close\":\"%s\",\"errors\":%lu,\"cpuUserMs\":%.1f,\"cpuSysMs\":%.1f,"
	       "\"cpuUsPerConnection\":%.2f}\n",
	       conns, secs, conns / secs, workers, n_listeners, abortive ? "rst" : "fin",
	       atomic_load(&total_errors), user_ms, sys_ms, conns ? (user_ms + sys_ms) * 1e3 / conns : 0.0);
	for (int i = 0; i < n_listeners; i++)
		close(listeners[i]);
	free(tids);
	return 0;
}
