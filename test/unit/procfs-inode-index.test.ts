import fc from "fast-check";
import t from "tap";
import { InodeIndex } from "../../plugin/procfs/inode-index.ts";

t.test("behaves like a first-wins Map, through growth and odd keys", async (t) => {
  const key = fc.oneof(fc.integer({ min: 1, max: 5000 }), fc.integer({ min: 1, max: 0xffffffff }), fc.constantFrom(0, -1, 2 ** 32, 2 ** 40, 1.5));
  fc.assert(fc.property(fc.array(fc.tuple(key, fc.nat(1e6)), { maxLength: 3000 }), fc.array(key, { maxLength: 50 }), (pairs, probes) => {
    const index = new InodeIndex();
    const model = new Map<number, number>();
    for (const [k, v] of pairs) {
      const added = index.add(k, v);
      if (added !== !model.has(k)) throw new Error(`add(${k}) said ${added}`);
      if (added) model.set(k, v);
    }
    if (index.size !== model.size) throw new Error(`size ${index.size} != ${model.size}`);
    for (const k of [...model.keys(), ...probes]) {
      if (index.get(k) !== (model.get(k) ?? -1)) throw new Error(`get(${k})`);
    }
  }), { numRuns: 200 });
  t.pass("agrees with the model");
});
