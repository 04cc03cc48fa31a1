/*
 * The C floor for the procfs scan benchmark: the same work as plugin/procfs scanProc, written the
 * way a careful C program would. Discover network namespaces (readlink /proc/PID/ns/net), read and
 * parse net/tcp + net/tcp6 once per namespace (listening ports, established rows, addresses
 * formatted with inet_ntop), then readlink every /proc/PID/fd/N to map socket inodes to pids and
 * read comm of the owners.
 *
 * Usage: procfs-floor [PROC_ROOT] [--at]
 *   --at  readlinkat() relative to an open fd directory instead of a full path per link (Node has
 *         no readlinkat, so the default is the like-for-like variant).
 * Prints one JSON line: phase times in ms and counts.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <endian.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define ESTABLISHED 0x01
#define LISTEN 0x0A

struct row {
  uint64_t inode;
  uint64_t netns;
  int pid;
  uint16_t lport, rport;
  char laddr[INET6_ADDRSTRLEN], raddr[INET6_ADDRSTRLEN];
};

struct ns { uint64_t inode; int *pids; int npids, cap; };

static const char *root = "/proc";
static int use_at;
static struct ns *nss; static int nns, nscap;
static struct row *rows; static long nrows, rowcap;
static long listening;
static long readlinks;

/* Open-addressing hash: socket inode -> row index (rows are unique by inode). */
static uint64_t *hkeys; static long *hvals; static long hcap;

static double now_ms(void) {
  struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void hput(uint64_t k, long v) {
  long i = (long)((k * 0x9E3779B97F4A7C15ull) & (uint64_t)(hcap - 1));
  while (hkeys[i] && hkeys[i] != k) i = (i + 1) & (hcap - 1);
  hkeys[i] = k; hvals[i] = v;
}
static long hget(uint64_t k) {
  long i = (long)((k * 0x9E3779B97F4A7C15ull) & (uint64_t)(hcap - 1));
  while (hkeys[i]) { if (hkeys[i] == k) return hvals[i]; i = (i + 1) & (hcap - 1); }
  return -1;
}

static int hexv(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* "0100007F:0CEA" (host-endian 32-bit words) -> text address and port; returns end or NULL. */
static const char *addr(const char *p, char *out, uint16_t *port) {
  uint32_t w[4]; int n = 0;
  while (n < 4 && p[0] != ':') {
    uint32_t v = 0;
    for (int i = 0; i < 8; i++) { int h = hexv(p[i]); if (h < 0) return NULL; v = v << 4 | (uint32_t)h; }
    w[n++] = v; p += 8;
  }
  if (*p++ != ':' || (n != 1 && n != 4)) return NULL;
  uint32_t pv = 0;
  for (int i = 0; i < 4; i++) { int h = hexv(p[i]); if (h < 0) return NULL; pv = pv << 4 | (uint32_t)h; }
  *port = (uint16_t)pv;
  if (n == 1) inet_ntop(AF_INET, &w[0], out, INET6_ADDRSTRLEN);
  else if (w[0] == 0 && w[1] == 0 && w[2] == htonl(0xffff)) inet_ntop(AF_INET, &w[3], out, INET6_ADDRSTRLEN);
  else inet_ntop(AF_INET6, w, out, INET6_ADDRSTRLEN);
  return p + 4;
}

static const char *skip_field(const char *p) {
  while (*p == ' ') p++;
  while (*p && *p != ' ' && *p != '\n') p++;
  return p;
}

static void parse_line(const char *p, uint64_t netns) {
  while (*p == ' ') p++;
  if (p[0] == 's' && p[1] == 'l') return;
  p = skip_field(p); while (*p == ' ') p++;
  struct row r = { .netns = netns };
  if (!(p = addr(p, r.laddr, &r.lport))) return;
  while (*p == ' ') p++;
  if (!(p = addr(p, r.raddr, &r.rport))) return;
  while (*p == ' ') p++;
  int st = hexv(p[0]) * 16 + hexv(p[1]);
  p += 2;
  for (int i = 0; i < 5; i++) p = skip_field(p);
  r.inode = strtoull(p, NULL, 10);
  if (st == LISTEN) listening++;
  else if (st == ESTABLISHED) {
    if (nrows == rowcap) rows = realloc(rows, sizeof *rows * (size_t)(rowcap = rowcap ? rowcap * 2 : 4096));
    rows[nrows++] = r;
  }
}

static int read_table(int pid, const char *name, uint64_t netns) {
  static char buf[1 << 20];
  char path[256];
  snprintf(path, sizeof path, "%s/%d/net/%s", root, pid, name);
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  size_t have = 0; ssize_t n;
  while ((n = read(fd, buf + have, sizeof buf - 1 - have)) > 0) {
    have += (size_t)n; buf[have] = 0;
    char *line = buf, *nl;
    while ((nl = memchr(line, '\n', have - (size_t)(line - buf)))) { *nl = 0; parse_line(line, netns); line = nl + 1; }
    have -= (size_t)(line - buf);
    memmove(buf, line, have);
  }
  close(fd);
  return 0;
}

static int cmp_int(const void *a, const void *b) {
  return *(const int *)a - *(const int *)b;
}

static uint64_t link_inode(const char *link, ssize_t len, const char *prefix) {
  size_t pl = strlen(prefix);
  if (len <= (ssize_t)pl || memcmp(link, prefix, pl) != 0) return 0;
  return strtoull(link + pl, NULL, 10);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) { if (!strcmp(argv[i], "--at")) use_at = 1; else root = argv[i]; }
  double t0 = now_ms();
  int *pids = NULL; int npids = 0, pcap = 0;
  DIR *d = opendir(root); struct dirent *e;
  if (!d) { perror(root); return 1; }
  while ((e = readdir(d))) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    if (npids == pcap) pids = realloc(pids, sizeof *pids * (size_t)(pcap = pcap ? pcap * 2 : 1024));
    pids[npids++] = atoi(e->d_name);
  }
  closedir(d);
  qsort(pids, (size_t)npids, sizeof *pids, cmp_int);
  char path[512], link[256];
  for (int i = 0; i < npids; i++) {
    snprintf(path, sizeof path, "%s/%d/ns/net", root, pids[i]);
    ssize_t n = readlink(path, link, sizeof link - 1);
    uint64_t ino = link_inode(link, n, "net:[");
    if (!ino) continue;
    int k = 0;
    while (k < nns && nss[k].inode != ino) k++;
    if (k == nns) {
      if (nns == nscap) nss = realloc(nss, sizeof *nss * (size_t)(nscap = nscap ? nscap * 2 : 16));
      nss[nns++] = (struct ns){ .inode = ino };
    }
    struct ns *s = &nss[k];
    if (s->npids == s->cap) s->pids = realloc(s->pids, sizeof(int) * (size_t)(s->cap = s->cap ? s->cap * 2 : 16));
    s->pids[s->npids++] = pids[i];
  }
  double t1 = now_ms();
  for (int k = 0; k < nns; k++) {
    for (int j = 0; j < nss[k].npids; j++) {
      if (read_table(nss[k].pids[j], "tcp", nss[k].inode) != 0) continue;
      read_table(nss[k].pids[j], "tcp6", nss[k].inode);
      break;
    }
  }
  double t2 = now_ms();
  for (hcap = 1024; hcap < nrows * 2; hcap <<= 1) {}
  hkeys = calloc((size_t)hcap, sizeof *hkeys); hvals = calloc((size_t)hcap, sizeof *hvals);
  long wanted = 0;
  for (long i = 0; i < nrows; i++) if (rows[i].inode) { hput(rows[i].inode, i); wanted++; }
  long owned = 0;
  /* Like the TypeScript scan: stop once every established socket (with an inode) has its owner. */
  for (int i = 0; i < npids && owned < wanted; i++) {
    snprintf(path, sizeof path, "%s/%d/fd", root, pids[i]);
    int dfd = open(path, O_RDONLY | O_DIRECTORY);
    if (dfd < 0) continue;
    DIR *fdd = fdopendir(dfd);
    int owner = 0;
    while ((e = readdir(fdd))) {
      if (e->d_name[0] == '.') continue;
      ssize_t n;
      if (use_at) n = readlinkat(dfd, e->d_name, link, sizeof link - 1);
      else { snprintf(path, sizeof path, "%s/%d/fd/%s", root, pids[i], e->d_name); n = readlink(path, link, sizeof link - 1); }
      readlinks++;
      uint64_t ino = link_inode(link, n, "socket:[");
      if (!ino) continue;
      long r = hget(ino);
      if (r >= 0 && rows[r].pid == 0) { rows[r].pid = pids[i]; owned++; owner = 1; }
    }
    closedir(fdd);
    if (owner) {
      snprintf(path, sizeof path, "%s/%d/comm", root, pids[i]);
      int cfd = open(path, O_RDONLY);
      if (cfd >= 0) { char comm[32]; if (read(cfd, comm, sizeof comm) < 0) comm[0] = 0; close(cfd); }
    }
  }
  double t3 = now_ms();
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
  printf("{\"nsMs\":%.1f,\"parseMs\":%.1f,\"fdWalkMs\":%.1f,\"totalMs\":%.1f,\"cpuMs\":%.1f,\"namespaces\":%d,"
         "\"established\":%ld,\"listening\":%ld,\"owned\":%ld,\"readlinks\":%ld}\n",
         t1 - t0, t2 - t1, t3 - t2, t3 - t0, cpu, nns, nrows, listening, owned, readlinks);
  return 0;
}
