/**
 * Which kernels may run the eBPF tracker at all, decided before anything is loaded. Scope's rules:
 * nothing below 4.4, and none of Ubuntu's 4.4.0-119..126 (they panicked under its probes: scope#3131).
 * On top, our CO-RE programs need the kernel's BTF.
 */
import { existsSync, readFileSync } from "node:fs";

export type KernelVerdict = { supported: true } | { supported: false; reason: string };

const RELEASE = /^(\d+)\.(\d+)/;
const UBUNTU_XENIAL_ABI = /^4\.4\.0-(\d+)/;

/** `release` is uname -r (/proc/sys/kernel/osrelease); `version` is uname -v (/proc/sys/kernel/version). */
export function checkKernelRelease(release: string, version: string): KernelVerdict {
  const parts = RELEASE.exec(release);
  if (parts === null) return { supported: false, reason: `unparseable kernel release ${JSON.stringify(release)} (expected e.g. 4.4.2-1)` };
  const major = Number(parts[1]);
  const minor = Number(parts[2]);
  if (major < 4 || (major === 4 && minor < 4)) return { supported: false, reason: `kernel ${release} is older than 4.4` };
  const abi = UBUNTU_XENIAL_ABI.exec(release);
  if (abi !== null && version.includes("Ubuntu")) {
    const n = Number(abi[1]);
    if (n >= 119 && n <= 126) return { supported: false, reason: `Ubuntu kernel ${release} is denylisted: 4.4.0-119..126 panic under BPF probes (scope#3131)` };
  }
  return { supported: true };
}

export interface KernelFacts {
  release: string;
  version: string;
  btfPresent: boolean;
}

export function readKernelFacts(procRoot: string, btfPath: string): KernelFacts {
  const read = (path: string) => {
    try {
      return readFileSync(path, "utf8").trim();
    } catch {
      return "";
    }
  };
  return {
    release: read(`${procRoot}/sys/kernel/osrelease`),
    version: read(`${procRoot}/sys/kernel/version`),
    btfPresent: existsSync(btfPath),
  };
}

export function checkKernel(facts: KernelFacts): KernelVerdict {
  const byRelease = checkKernelRelease(facts.release, facts.version);
  if (!byRelease.supported) return byRelease;
  if (!facts.btfPresent) return { supported: false, reason: "kernel has no BTF (/sys/kernel/btf/vmlinux missing): CO-RE programs cannot load" };
  return { supported: true };
}

/**
 * What the loader attaches to each hook, by kernel (native/src/attach_plan.c makes the choice at load;
 * this table says what it should choose, and test/kernel/* check the two agree on every kernel of the
 * matrix). Rows for a hook are in order of preference.
 */
export interface AttachRule {
  hook: string;
  type: "tp_btf" | "tracepoint";
  /** First kernel with it, [major, minor]. */
  since: readonly [number, number];
  needsBtf: boolean;
  /** When the kernel skips a run of this program, and whether it counts the skip (our `skipped`). */
  skips: string;
}

export const attachTable: readonly AttachRule[] = [
  {
    hook: "inet_sock_set_state", type: "tp_btf", since: [5, 5], needsBtf: true,
    skips: "only when this same program is already running on the CPU (its own guard); the kernel counts it as the program's recursion_misses",
  },
  {
    hook: "inet_sock_set_state", type: "tracepoint", since: [4, 16], needsBtf: false,
    skips: "whenever any kprobe or tracepoint program is running on the CPU (bpf_prog_active); counted only by kernels with missed stats (6.18 yes, 6.1 and 5.10 silently)",
  },
  {
    hook: "sys_exit_accept", type: "tracepoint", since: [4, 4], needsBtf: false,
    skips: "as any classic tracepoint, but it runs in process context at the syscall's exit, with nothing of ours underneath",
  },
  {
    hook: "sys_exit_accept4", type: "tracepoint", since: [4, 4], needsBtf: false,
    skips: "as sys_exit_accept",
  },
];

/**
 * The tp_btf state change's backstop (bpf/tracker.bpf.c) reads the first program's per-CPU guard,
 * `struct bpf_prog`'s `active`, from 5.12; before that the kernel has no such guard on raw
 * tracepoints (the first is never skipped) and the backstop is off, saying so in the hook's reason.
 */
export const BACKSTOP_GUARD_SINCE: readonly [number, number] = [5, 12];

function atLeastOn(facts: Pick<KernelFacts, "release">): (since: readonly [number, number]) => boolean {
  const parts = RELEASE.exec(facts.release);
  const version: [number, number] = parts === null ? [0, 0] : [Number(parts[1]), Number(parts[2])];
  return (since) => version[0] > since[0] || (version[0] === since[0] && version[1] >= since[1]);
}

/** Whether the backstop should read the first program's guard on `facts`'s kernel (with tp_btf). */
export function expectedBackstopReadsGuard(facts: KernelFacts): boolean {
  return atLeastOn(facts)(BACKSTOP_GUARD_SINCE);
}

/** The program type the table expects on `facts`'s kernel for each hook (null: the hook cannot be attached). */
export function expectedAttachments(facts: KernelFacts): Array<{ hook: string; type: AttachRule["type"] | null }> {
  const atLeast = atLeastOn(facts);
  const hooks = [...new Set(attachTable.map((rule) => rule.hook))];
  return hooks.map((hook) => {
    const rule = attachTable.find((r) => r.hook === hook && atLeast(r.since) && (!r.needsBtf || facts.btfPresent));
    return { hook, type: rule?.type ?? null };
  });
}

/**
 * The socket snapshot's iterator (iter/task_file, bpf/snapshot.bpf.c) is used from 6.1, the oldest
 * kernel of our matrix it has run on without harm. The kernel has it from 5.8, but on Debian 11's
 * 5.10 a seed under connection churn locked both CPUs up for good (soft lockups, an RCU stall on
 * the CPU reading the iterator), and 5.10's read of a task iterator never reschedules between
 * objects (up to a million per read(), in Debian's 5.10.223 source). /proc, slower but safe, scans there.
 */
export const SNAPSHOT_ITERATOR_SINCE: readonly [number, number] = [6, 1];

/** The release of the kernel this process runs on (not --proc-root's: the iterator is created here); "" when unreadable. */
export function runningKernelRelease(): string {
  try {
    return readFileSync("/proc/sys/kernel/osrelease", "utf8").trim();
  } catch {
    return "";
  }
}

/** Whether the socket snapshot's iterator may be created on `facts`'s kernel, and why not. */
export function checkSnapshotIterator(facts: Pick<KernelFacts, "release">): KernelVerdict {
  if (RELEASE.exec(facts.release) === null) return { supported: false, reason: `unparseable kernel release ${JSON.stringify(facts.release)}` };
  if (atLeastOn(facts)(SNAPSHOT_ITERATOR_SINCE)) return { supported: true };
  return {
    supported: false,
    reason: `kernel ${facts.release} is older than ${SNAPSHOT_ITERATOR_SINCE.join(".")}: iter/task_file locked a 5.10 kernel up under connection churn, and no kernel from 5.8 to 6.0 has run it in our tests`,
  };
}
