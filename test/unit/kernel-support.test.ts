import t from "tap";
import { checkKernel, checkKernelRelease, checkSnapshotIterator, expectedAttachments } from "../../plugin/supervisor/kernel-support.ts";

// The table from Scope's TestIsKernelSupported (probe/endpoint/ebpf_test.go), plus our own edges.
const cases: Array<[string, string, boolean]> = [
  ["4.1", "", false],
  ["4.4", "", true],
  ["4.4-custom", "", true],
  ["4.4.127", "", true],
  ["4.4.0-119-generic", "#143-Ubuntu SMP Mon Apr 2 16:08:24 UTC 2018", false],
  ["4.4.0-127-generic", "#153-Ubuntu SMP Sat May 19 10:58:46 UTC 2018", true],
  ["4.4.0-116-generic", "#140-Ubuntu SMP Mon Feb 12 21:23:04 UTC 2018", true],
  ["4.13.0-38-generic", "#43-Ubuntu SMP Wed Mar 14 15:20:44 UTC 2018", true],
  ["4.13.0-119-generic", "#43-Ubuntu SMP Wed Apr 1 00:00:00 UTC 2018", true],
  ["4.3.0", "", false],
  ["4.4.0-121-generic", "#145-Ubuntu SMP Fri Apr 13 13:47:23 UTC 2018", false],
  ["4.4.0-126-generic", "#152-Ubuntu SMP", false],
  ["4.4.0-121-generic", "#1 SMP Debian", true],
  ["3.10.0-1160.el7.x86_64", "#1 SMP", false],
  ["6.18.44", "#1 SMP PREEMPT_DYNAMIC", true],
  ["garbage", "", false],
];

for (const [release, version, supported] of cases) {
  t.test(`${release} ${version || "(no version)"} -> ${supported ? "supported" : "refused"}`, async (t) => {
    const verdict = checkKernelRelease(release, version);
    t.equal(verdict.supported, supported);
    if (!verdict.supported) t.ok(verdict.reason.length > 0, "a refusal says why");
  });
}

t.test("a kernel without BTF is refused with the reason", async (t) => {
  const verdict = checkKernel({ release: "6.1.0", version: "", btfPresent: false });
  t.equal(verdict.supported, false);
  t.match(verdict.supported ? "" : verdict.reason, /BTF/);
});

// The attach table: tp_btf for the state change from 5.5 with BTF, the classic tracepoint before.
for (const [release, btfPresent, setState] of [
  ["6.18.44", true, "tp_btf"], ["6.12.117+deb13-amd64", true, "tp_btf"], ["6.1.0-50-amd64", true, "tp_btf"],
  ["5.10.0-32-amd64", true, "tp_btf"], ["5.5.0", true, "tp_btf"], ["5.4.0-100-generic", true, "tracepoint"],
  ["5.10.0", false, "tracepoint"], ["4.16.0", false, "tracepoint"], ["4.15.0-20-generic", false, null],
] as const) {
  t.test(`attach table: ${release}${btfPresent ? "" : " without BTF"} -> inet_sock_set_state ${setState}`, async (t) => {
    const expected = expectedAttachments({ release, version: "", btfPresent });
    t.same(expected, [
      { hook: "inet_sock_set_state", type: setState },
      { hook: "sys_exit_accept", type: "tracepoint" },
      { hook: "sys_exit_accept4", type: "tracepoint" },
    ]);
  });
}

// The socket snapshot's iterator: from 6.1 (5.10 locked up under it); /proc scans before.
for (const [release, usable] of [
  ["6.18.44", true], ["6.12.117+deb13-amd64", true], ["6.1.0-50-amd64", true], ["6.1", true], ["7.0.1", true],
  ["6.0.19", false], ["5.15.0-100-generic", false], ["5.10.0-32-amd64", false], ["5.8.0", false], ["4.19.0", false], ["", false], ["garbage", false],
] as const) {
  t.test(`snapshot iterator gate: ${JSON.stringify(release)} -> ${usable ? "iterator" : "/proc"}`, async (t) => {
    const verdict = checkSnapshotIterator({ release });
    t.equal(verdict.supported, usable);
    if (!verdict.supported) t.match(verdict.reason, release === "" || release === "garbage" ? /unparseable kernel release/ : /older than 6\.1/, "a refusal says why");
  });
}
