/**
 * Latency distributions for the benchmarks: sequential calls after a warm-up, p50 and p99 by
 * nearest rank.
 */

export interface Dist {
  p50: number;
  p99: number;
  n: number;
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

export function distribution(ms: number[]): Dist {
  ms.sort((a, b) => a - b);
  return { p50: quantile(ms, 0.5), p99: quantile(ms, 0.99), n: ms.length };
}

/**
 * Each measurement starts with this process's garbage collected (run with --expose-gc): otherwise
 * what an earlier phase left is collected in the middle of this one, and its tail is that pause.
 */
function settle(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

/**
 * Untimed calls first, for this long and at least WARMUP_MIN_CALLS: a probe asks every second for
 * as long as it runs, so its steady state is what counts, and the first hundred or so calls of a
 * fresh client (code not yet optimized on either side) took 2-5x as long as the ones after.
 */
export const WARMUP_MS = 1_000;
const WARMUP_MIN_CALLS = 3;

export async function measure(n: number, once: () => Promise<unknown>): Promise<Dist> {
  const warmStart = performance.now();
  for (let calls = 0; calls < WARMUP_MIN_CALLS || performance.now() - warmStart < WARMUP_MS; calls++) await once();
  settle();
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await once();
    ms.push(performance.now() - t0);
  }
  return distribution(ms);
}

export function measureSync(n: number, once: () => unknown): Dist {
  once();
  settle();
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    once();
    ms.push(performance.now() - t0);
  }
  return distribution(ms);
}
