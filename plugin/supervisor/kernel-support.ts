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
