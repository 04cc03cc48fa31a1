/** Kernel identification the supervisor reads through the same --proc-root as the scan. */
import { readFile } from "node:fs/promises";
import { isVanished } from "./proc-io.ts";

/** uname -r, e.g. "6.8.0-45-generic". Throws when unreadable: every Linux procfs has it. */
export async function readKernelRelease(procRoot = "/proc"): Promise<string> {
  return (await readFile(`${procRoot}/sys/kernel/osrelease`, "utf8")).trim();
}

/** Ubuntu's "Ubuntu 4.4.0-119.143-generic 4.4.114"; undefined on kernels without it. */
export async function readVersionSignature(procRoot = "/proc"): Promise<string | undefined> {
  try {
    return (await readFile(`${procRoot}/version_signature`, "utf8")).trim();
  } catch (error) {
    if (isVanished(error)) return undefined;
    throw error;
  }
}
