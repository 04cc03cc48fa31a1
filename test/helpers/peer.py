"""Real TCP peers for the kernel tests, run inside test namespaces with `ip netns exec`.

serve HOST PORT MODE   MODE=hold: accept and keep every connection; MODE=close: accept and close at once.
                       Blocks in accept() (a real blocking syscall, as old servers do). Prints "listening" once bound.
connect HOST PORT N HOLD [RATE]   open N connections one after another (RATE per second, default as fast
                       as possible); HOLD=1 keeps them open until stdin closes.
                       Prints one line per connection: "local_port" and finally "done".
serve HOST PORT late   listen, but accept() only after a line on stdin, then accept all that is queued
                       (closing each at once), print "accepted N"; for the reset-before-accept race.
connect-reset HOST PORT N   open N connections and reset each at once (SO_LINGER 0, then close: RST),
                       printing each "local_port", then "done".
"""
import struct
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
    if mode == "late":
        sys.stdin.readline()
        s.setblocking(False)
        n = 0
        while True:
            try:
                conn, _ = s.accept()
            except BlockingIOError:
                break
            conn.close()
            n += 1
        print("accepted", n, flush=True)
        sys.stdin.read()
        return
    kept = []
    while True:
        conn, _ = s.accept()
        if mode == "close":
            conn.close()
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


def connect_reset(host, port, n):
    for _ in range(n):
        c = socket.socket(family(host), socket.SOCK_STREAM)
        c.connect((host, port))
        print(c.getsockname()[1], flush=True)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    print("done", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "connect-reset":
        connect_reset(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        connect(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1", float(sys.argv[6]) if len(sys.argv) > 6 else 0)
