/**
 * A FAKE of the Node-API addon: a plain JS module loaded through the same loader, for the tracker
 * paths the real addon cannot be made to take on demand. `behaviour` is read from globalThis, so
 * each test sets what the kernel side "does"; `options` is what the tracker handed the addon
 * (its onBatch is how a test delivers ring-buffer batches).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export function fakeAddon(t: { teardown(fn: () => unknown): void }): string {
  const dir = mkdtempSync(join(tmpdir(), "robust-fake-addon-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, `fake-addon-${Math.random().toString(36).slice(2)}.cjs`);
  writeFileSync(path, `
    const b = () => globalThis.__robustFakeAddon;
    exports.monotonicNowNs = () => Number(process.hrtime.bigint());
    exports.Tracker = class {
      constructor(options) { b().options = options; }
      counters() {
        if (b().countersThrow) throw new Error("bpf_map_lookup_elem: EBADF");
        return { lost: 0, failedConnects: 0, connectNoPid: 0, acceptNoSock: 0, missed: 0, ...b().counters };
      }
      attachedPrograms() { return ["fake"]; }
      attachments() { return [{ hook: "fake", type: "tracepoint", program: "fake", reason: "stand-in" }]; }
      stop() {}
    };
  `);
  return path;
}

export type Behaviour = { counters?: Record<string, number>; countersThrow?: boolean; options?: { onBatch(b: Uint8Array): void } };
export const behaviour = (b: Behaviour) => ((globalThis as { __robustFakeAddon?: Behaviour }).__robustFakeAddon = b);
