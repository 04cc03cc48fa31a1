/**
 * The socket inodes open in one /proc/PID/fd directory, in directory order: the scan's hot loop
 * (one link per open fd on the host). The native addon does it with readlinkat() and no string per
 * link; the JS walk is the same loop through readlinkSync, for when the addon is not built.
 */
import { readlinkSync } from "node:fs";
import { describeError } from "../errors.ts";
import { loadNativeAddon } from "../ebpf/native-addon.ts";
import { bracketedInode } from "./links.ts";
import { eachDirEntry, FAILED, failure, isVanished, type Outcome } from "./proc-io.ts";

export type FdWalkerKind = "native" | "js";

export interface FdWalker {
  readonly kind: FdWalkerKind;
  /**
   * Not ok when the directory cannot be read (vanished: the process is gone) or a link cannot
   * (EACCES: every other fd fails alike). The JS walk yields every few hundred entries.
   */
  socketInodes(fdDir: string): Generator<void, Outcome<ArrayLike<number>>>;
}

export const jsFdWalker: FdWalker = {
  kind: "js",
  *socketInodes(fdDir) {
    const inodes: number[] = [];
    let denied = false;
    const base = `${fdDir}/`;
    const walked = yield* eachDirEntry(fdDir, (name) => {
      let link: string;
      try {
        link = readlinkSync(base + name);
      } catch (error) {
        // Vanished: that fd was closed meanwhile.
        denied = !isVanished(error);
        return !denied;
      }
      const inode = bracketedInode(link, "socket:[");
      if (inode !== 0) inodes.push(inode);
      return true;
    });
    if (!walked.ok) return walked;
    return denied ? FAILED : { ok: true, value: inodes };
  },
};

/** Entries per native call: a few milliseconds of readlinks, then the scan may yield. */
const NATIVE_CHUNK = 1024;

/** The walk a default scan uses and why: a JS walk is never chosen silently. */
export interface FdWalkChoice {
  walker: FdWalker;
  reason: string;
}

type AddonLoader = () => Pick<ReturnType<typeof loadNativeAddon>, "socketInodes">;

let chosen: FdWalkChoice | undefined;

/** Which walk a default scan uses, and why; looked for once per process. */
export function fdWalkChoice(): FdWalkChoice {
  chosen ??= chooseFdWalk(loadNativeAddon);
  return chosen;
}

/** The addon's walk when `load` gives an addon that has one, else the JS walk with the reason. */
export function chooseFdWalk(load: AddonLoader): FdWalkChoice {
  let addon;
  try {
    addon = load();
  } catch (error) {
    return { walker: jsFdWalker, reason: `JS fd walk (slower): the native one failed to load: ${describeError(error)}` };
  }
  if (typeof addon.socketInodes !== "function") {
    return { walker: jsFdWalker, reason: "JS fd walk (slower): the native addon predates socketInodes (rebuild it: bash scripts/setup.sh)" };
  }
  const socketInodes = addon.socketInodes.bind(addon);
  return {
    reason: "native fd walk (readlinkat in the addon)",
    walker: {
      kind: "native",
      *socketInodes(fdDir) {
        const chunks: Float64Array[] = [];
        for (let from: bigint | undefined = 0n; from !== undefined;) {
          if (chunks.length > 0) yield;
          try {
            const chunk = socketInodes(fdDir, from, NATIVE_CHUNK);
            chunks.push(chunk.inodes);
            from = chunk.next;
          } catch (error) {
            return failure(error);
          }
        }
        // Nearly every process fits one chunk: its array is the answer as it is.
        return { ok: true, value: chunks.length === 1 ? chunks[0] : chunks.flatMap((c) => Array.from(c)) };
      },
    },
  };
}

/** The addon's walker, or undefined when the addon is not built (or predates it). */
export function nativeFdWalker(): FdWalker | undefined {
  const { walker } = fdWalkChoice();
  return walker.kind === "native" ? walker : undefined;
}

/** The native walker when it is there (or `kind` says which); asking for "native" without it throws. */
export function fdWalker(kind?: FdWalkerKind): FdWalker {
  if (kind === "js") return jsFdWalker;
  const found = nativeFdWalker();
  if (found !== undefined) return found;
  if (kind === "native") throw new Error("the native fd walker is not built (run scripts/build-native.sh)");
  return jsFdWalker;
}
