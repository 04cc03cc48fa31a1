"""Real TCP peers for the kernel tests, run inside test namespaces with `ip netns exec`.

serve HOST PORT MODE   MODE=hold: accept and keep every connection; MODE=close: accept and close at once;
                       MODE=share: accept, keep a second fd of it (dup), and fork a child that holds it too
                       (prints "shared CHILD_PID" per connection).
                       Blocks in accept() (a real blocking syscall, as old servers do). Prints "listening" once bound.
connect HOST PORT N HOLD [RATE]   open N connections one after another (RATE per second, default as fast
                       as possible); HOLD=1 keeps them open until stdin closes.
                       Prints one line per connection: "local_port" and finally "done".
"""
import ctypes
import os
import signal
import socket
import sys
import time


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve(host, port, mode):
    s = socket.socket(family(host), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(4096)
    print("listening", flush=True)
    kept = []
    while True:
        conn, _ = s.accept()
        if mode == "close":
            conn.close()
        elif mode == "share":
            kept.append(conn)
            kept.append(os.dup(conn.fileno()))
            child = os.fork()
            if child == 0:
                # Dies with the server (tests SIGKILL it): PR_SET_PDEATHSIG.
                ctypes.CDLL(None).prctl(1, signal.SIGKILL)
                if os.getppid() == 1:
                    os._exit(0)
                signal.pause()
                os._exit(0)
            print("shared", child, flush=True)
        else:
            kept.append(conn)


def connect(host, port, n, hold, rate):
    kept = []
    start = time.monotonic()
    for i in range(n):
        if rate > 0:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        c = socket.socket(family(host), socket.SOCK_STREAM)
        try:
            c.connect((host, port))
        except OSError as e:
            print("error", e.errno, flush=True)
            c.close()
            continue
        print(c.getsockname()[1], flush=True)
        if hold:
            kept.append(c)
        else:
            c.close()
    print("done", flush=True)
    if hold:
        sys.stdin.read()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        connect(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1", float(sys.argv[6]) if len(sys.argv) > 6 else 0)
