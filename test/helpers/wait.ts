/**
 * How much longer to wait than on real hardware: scripts/vm/ sets KERNEL_TEST_TIME_SCALE in its
 * emulated guests (qemu TCG, about one core), where everything takes several times longer. It
 * stretches waits and timeouts only, never the work a test does or what it asserts.
 */
export const timeScale = Math.max(1, Number(process.env.KERNEL_TEST_TIME_SCALE ?? "1") || 1);

/**
 * Set by scripts/vm/ in its guests (KERNEL_TEST_EMULATION=tcg): the CPU is emulated, so a BPF
 * program runs tens of times longer than on hardware and an interrupt lands inside a run that much
 * more often. Only the skip assertions depend on it (see test/kernel/ebpf-tracker.test.ts).
 */
export const emulated = (process.env.KERNEL_TEST_EMULATION ?? "") !== "";

/** Polls a condition until it holds or the time runs out; the failure message says what was awaited. */
export async function waitFor(what: string, condition: () => boolean, timeoutMs = 10_000, stepMs = 20): Promise<void> {
  timeoutMs *= timeScale;
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, stepMs));
  }
}
