// SPDX-License-Identifier: Apache-2.0
/*
 * churn: loopback TCP connection churn generator.
 *
 * P worker threads share one listener on 127.0.0.1 (or ::1 with -6); each loops
 *   socket -> connect -> accept -> close(server side) -> close(client side)
 * as fast as it can for D seconds, then one JSON line goes to stdout:
 *   {"connections":N,"seconds":S,"connectionsPerSecond":R,"workers":P,"errors":E,
 *    "cpuUserMs":..,"cpuSysMs":..,"cpuUsPerConnection":..}
 * Each connection is 4 tracker events (CONNECT, ACCEPT, 2x CLOSE).
 *
 * The server side closes first so TIME_WAIT lands on the listener's 4-tuples and
 * the client's ephemeral ports are free again at once (no port exhaustion).
 * The CPU figures are this process's own (user + system, which includes the BPF
 * programs that run in its syscalls).
 *
 * usage: churn [-d seconds] [-p workers] [-6]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int listener = -1;
static struct sockaddr_storage server_addr;
static socklen_t server_len;
static int family = AF_INET;
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

	(void)arg;
	while (atomic_load_explicit(&running, memory_order_relaxed)) {
		int c = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (c < 0) {
			errors++;
			continue;
		}
		if (connect(c, (struct sockaddr *)&server_addr, server_len) != 0) {
			errors++;
			close(c);
			continue;
		}
		/* Another worker may take our connection and we theirs: same count. */
		int a = accept4(listener, NULL, NULL, SOCK_CLOEXEC);

		if (a < 0)
			errors++;
		else
			close(a);
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

	while ((opt = getopt(argc, argv, "d:p:6")) != -1) {
		switch (opt) {
		case 'd': duration = atof(optarg); break;
		case 'p': workers = atoi(optarg); break;
		case '6': family = AF_INET6; break;
		default:
			fprintf(stderr, "usage: %s [-d seconds] [-p workers] [-6]\n", argv[0]);
			return 2;
		}
	}
	if (workers < 1 || workers > 1024 || duration <= 0) {
		fprintf(stderr, "churn: bad -p or -d\n");
		return 2;
	}

	listener = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (listener < 0) {
		perror("churn: socket");
		return 1;
	}
	int one = 1;
	setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&server_addr, 0, sizeof(server_addr));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&server_addr;

		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		server_len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&server_addr;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_loopback;
		server_len = sizeof(*sin6);
	}
	if (bind(listener, (struct sockaddr *)&server_addr, server_len) != 0 ||
	    listen(listener, 4096) != 0 ||
	    getsockname(listener, (struct sockaddr *)&server_addr, &server_len) != 0) {
		perror("churn: listen");
		return 1;
	}

	pthread_t *tids = calloc((size_t)workers, sizeof(*tids));
	if (!tids)
		return 1;
	struct rusage r0, r1;
	getrusage(RUSAGE_SELF, &r0);
	double t0 = now_s();

	for (int i = 0; i < workers; i++) {
		if (pthread_create(&tids[i], NULL, worker, NULL) != 0) {
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
	       "\"errors\":%lu,\"cpuUserMs\":%.1f,\"cpuSysMs\":%.1f,\"cpuUsPerConnection\":%.2f}\n",
	       conns, secs, conns / secs, workers, atomic_load(&total_errors), user_ms, sys_ms,
	       conns ? (user_ms + sys_ms) * 1e3 / conns : 0.0);
	close(listener);
	free(tids);
	return 0;
}
