/*
 * page-touch: the cost of first touching freshly mapped memory on this machine, in microseconds
 * per 4 KiB page (median of several rounds). Every Report answer lands in fresh buffers on both
 * sides, and garbage-collected heaps map and unmap pages as they grow and shrink, so this is a
 * floor under the latency tails report-latency.ts measures: under a nested hypervisor a page
 * fault can cost tens of times what it costs on bare metal.
 * Usage: page-touch [MiB per round, default 64] [rounds, default 5]; prints "us_per_page X".
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int compare(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 64;
  int rounds = argc > 2 ? atoi(argv[2]) : 5;
  if (mib == 0 || rounds < 1 || rounds > 100) {
    fprintf(stderr, "usage: page-touch [MiB > 0] [rounds 1..100]\n");
    return 2;
  }
  size_t bytes = mib << 20, page = (size_t)sysconf(_SC_PAGESIZE);
  double per_page[100];
  for (int r = 0; r < rounds; r++) {
    double start = now_us();
    volatile char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      perror("page-touch: mmap");
      return 1;
    }
    for (size_t at = 0; at < bytes; at += page) p[at] = 1;
    per_page[r] = (now_us() - start) / (double)(bytes / page);
    munmap((void *)p, bytes);
  }
  qsort(per_page, rounds, sizeof per_page[0], compare);
  printf("us_per_page %.3f\n", per_page[rounds / 2]);
  return 0;
}
