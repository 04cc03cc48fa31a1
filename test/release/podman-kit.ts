/**
 * Podman for the release proofs, with all of its state in one directory of the run (storage, run
 * root, tmp, events, network config: nothing under /etc or /var/lib/containers) and runc (crun fails
 * on this machine). Containers run with host or no networking only, so podman makes no iptables
 * chains; `destroy()` removes the containers, the images and the directory.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { aptEnsure, ROOT } from "./release-kit.ts";

export interface Podman {
  dir: string;
  env: NodeJS.ProcessEnv;
  /** podman with this run's state. */
  run(args: readonly string[], input?: Buffer): string;
  /** Imports a root directory as an image. */
  importRoot(rootDir: string, tag: string): void;
  /** scripts/release/build-image.sh, offline, on `base`. */
  buildImage(tarball: string, tag: string, base: string): void;
  imageBytes(tag: string): number;
  destroy(): void;
}

export const ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"];

export function startPodman(): Podman {
  aptEnsure(["podman", "runc", "buildah"]);
  const dir = mkdtempSync("/var/tmp/endpoint-reporter-release-podman-");
  for (const sub of ["storage", "run", "tmp", "net"]) mkdirSync(join(dir, sub));
  writeFileSync(join(dir, "containers.conf"), [
    "[containers]",
    'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]',
    "[engine]",
    'runtime = "runc"',
    'cgroup_manager = "cgroupfs"',
    'events_logger = "file"',
    `events_logfile_path = "${dir}/events.log"`,
    `tmp_dir = "${dir}/tmp"`,
    "[network]",
    `network_config_dir = "${dir}/net"`,
    "",
  ].join("\n"));
  writeFileSync(join(dir, "storage.conf"), [
    "[storage]",
    'driver = "overlay"',
    `graphroot = "${dir}/storage"`,
    `runroot = "${dir}/run"`,
    "",
  ].join("\n"));
  const env = { ...process.env, CONTAINERS_CONF: join(dir, "containers.conf"), CONTAINERS_STORAGE_CONF: join(dir, "storage.conf"), TMPDIR: join(dir, "tmp") };
  const run = (args: readonly string[], input?: Buffer) =>
    execFileSync("podman", args, { env, input, encoding: "utf8", stdio: [input === undefined ? "ignore" : "pipe", "pipe", "pipe"], maxBuffer: 64 << 20 });
  return {
    dir,
    env,
    run,
    importRoot(rootDir, tag) {
      execFileSync("sh", ["-c", 'tar -C "$1" -c . | podman import - "$2"', "import", rootDir, tag], { env, stdio: ["ignore", "ignore", "pipe"] });
    },
    buildImage(tarball, tag, base) {
      execFileSync("bash", [join(ROOT, "scripts/release/build-image.sh"), tarball, tag, base], { env: { ...env, OFFLINE: "1" }, stdio: ["ignore", "pipe", "pipe"] });
    },
    imageBytes(tag) {
      return Number(run(["image", "inspect", "--format", "{{.Size}}", tag]).trim());
    },
    destroy() {
      try {
        run(["rm", "--all", "--force", "--time", "2"]);
        run(["rmi", "--all", "--force"]);
      } catch { /* the directory goes anyway */ }
      try {
        execFileSync("umount", ["-R", join(dir, "storage/overlay")], { stdio: "ignore" });
      } catch { /* nothing mounted */ }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export type Privilege = "privileged" | "sys-admin" | "bpf-perfmon-unconfined-tracing" | "bpf-perfmon" | "sys-ptrace" | "none";

/** What each privilege adds to the run (README "Deploy" documents the same). */
export const PRIVILEGE_ARGS: Record<Privilege, readonly string[]> = {
  "privileged": ["--privileged"],
  "sys-admin": ["--cap-add", "SYS_ADMIN"],
  "bpf-perfmon-unconfined-tracing": ["--cap-add", "BPF", "--cap-add", "PERFMON", "--security-opt", "seccomp=unconfined", "--volume", "/sys/kernel/tracing:/sys/kernel/tracing"],
  "bpf-perfmon": ["--cap-add", "BPF", "--cap-add", "PERFMON"],
  "sys-ptrace": ["--cap-add", "SYS_PTRACE"],
  "none": [],
};

/**
 * The least-privilege runs the container test makes, and what each must give. `rows`: the
 * scenario's connections (in test namespaces, owned by root processes with every capability) are
 * reported with their pids; /proc lets a process without CAP_SYS_PTRACE read neither the fds nor the
 * namespaces of such processes, so on the fallback only sys-ptrace sees them.
 */
export const PRIVILEGES: ReadonlyArray<{ name: Privilege; expect: "ebpf" | "procfs"; reason?: RegExp; rows: boolean }> = [
  { name: "sys-admin", expect: "ebpf", rows: true },
  { name: "bpf-perfmon-unconfined-tracing", expect: "ebpf", rows: true },
  { name: "bpf-perfmon", expect: "procfs", reason: /eBPF failed to start, fell back: ERR_BPF_PERMISSION/, rows: false },
  { name: "none", expect: "procfs", reason: /eBPF failed to start, fell back: ERR_BPF_PERMISSION/, rows: false },
  { name: "sys-ptrace", expect: "procfs", reason: /eBPF failed to start, fell back: ERR_BPF_PERMISSION/, rows: true },
];

/**
 * The run beside Scope's probe (the DaemonSet in scripts/deploy/ mirrors it): host pid, network and
 * hostname, the host's /var/run/scope (plugins/ for the probe, the gRPC socket beside it; `runDir` in
 * tests), /sys/fs/bpf, and the host's /proc at /host/proc (the image's --proc-root).
 */
export function deploymentRun(privilege: Privilege, runDir = "/var/run/scope"): string[] {
  return [
    ...PRIVILEGE_ARGS[privilege],
    "--pid=host", "--network=host", "--uts=host",
    "--volume", `${runDir}:/var/run/scope`,
    "--volume", "/sys/fs/bpf:/sys/fs/bpf",
    "--volume", "/proc:/host/proc:ro",
  ];
}
