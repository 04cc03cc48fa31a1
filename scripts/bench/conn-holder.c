/*
 * Holds many established loopback TCP connections (both ends in this one process) for the procfs
 * benchmark. Commands on stdin, one per line: "grow N" brings the total to N connections and answers
 * "ready N" (or "error ..."); EOF exits. Every socket has SO_LINGER 0 so that exit resets them all
 * instead of leaving tens of thousands of TIME_WAIT entries behind for the next run to read.
 *
 * Clients bind explicitly to 127.<1+instance>.x.y:port pairs so that no ephemeral-port search (slow
 * and exhaustible at 100k) is involved; servers are a few listeners on 127.0.0.1 with kernel-chosen
 * ports. One process holds at most (RLIMIT_NOFILE hard limit - 64) / 2 connections, because raising
 * the hard limit needs CAP_SYS_RESOURCE, which containers often lack: the benchmark starts several.
 *
 * Usage: conn-holder INSTANCE (0..254)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTENERS 4
#define BATCH 256
#define PORTS_PER_ADDR 20000
#define FIRST_PORT 40000

static int listeners[LISTENERS];
static struct sockaddr_in listen_addr[LISTENERS];
static long held;       /* established connections held so far */
static long next_slot;  /* next client address/port slot to try */
static long capacity;   /* connections this process can hold */
static uint32_t instance;

static void no_linger(int fd) {
  struct linger l = { .l_onoff = 1, .l_linger = 0 };
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

static int raise_nofile(void) {
  struct rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return -1;
  r.rlim_cur = r.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &r) != 0) return -1;
  capacity = ((long)r.rlim_cur - 64) / 2;
  return 0;
}

static int open_listeners(void) {
  for (int i = 0; i < LISTENERS; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 4096) != 0) return -1;
    socklen_t len = sizeof listen_addr[i];
    getsockname(fd, (struct sockaddr *)&listen_addr[i], &len);
    listeners[i] = fd;
  }
  return 0;
}

/* One client connect to listener `which`; returns 0, or -1 after trying too many taken slots. */
static int connect_one(int which) {
  for (int attempts = 0; attempts < 1000; attempts++) {
    long slot = next_slot++;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    no_linger(fd);
    struct sockaddr_in src = { .sin_family = AF_INET };
    src.sin_addr.s_addr = htonl((127u << 24) | ((1u + instance) << 16) | (uint32_t)(1 + slot / PORTS_PER_ADDR));
    src.sin_port = htons((uint16_t)(FIRST_PORT + slot % PORTS_PER_ADDR));
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
        connect(fd, (struct sockaddr *)&listen_addr[which], sizeof listen_addr[which]) != 0) {
      close(fd);
      continue;
    }
    return 0;
  }
  return -1;
}

static int grow(long target) {
  while (held < target) {
    int per[LISTENERS] = { 0 };
    long n = target - held < BATCH ? target - held : BATCH;
    for (long i = 0; i < n; i++) {
      int which = (int)((held + i) % LISTENERS);
      if (connect_one(which) != 0) return -1;
      per[which]++;
    }
    for (int l = 0; l < LISTENERS; l++) {
      for (int k = 0; k < per[l]; k++) {
        int fd = accept(listeners[l], NULL, NULL);
        if (fd < 0) return -1;
        no_linger(fd);
      }
    }
    held += n;
  }
  return 0;
}

int main(int argc, char **argv) {
  instance = argc > 1 ? (uint32_t)atoi(argv[1]) % 255 : 0;
  if (raise_nofile() != 0 || open_listeners() != 0) {
    printf("error setup: %s\n", strerror(errno));
    return 1;
  }
  char line[128];
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("capacity %ld\n", capacity);
  while (fgets(line, sizeof line, stdin)) {
    long n;
    if (sscanf(line, "grow %ld", &n) != 1) continue;
    if (n > capacity) printf("error grow %ld: capacity %ld\n", n, capacity);
    else if (grow(n) != 0) printf("error grow %ld at %ld: %s\n", n, held, strerror(errno));
    else printf("ready %ld\n", held);
  }
  return 0;
}
