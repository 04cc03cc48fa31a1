"""Holds TCP connections in chosen states, for the tests of which states count as open.

The server ends are held by this process, in the namespace it runs in; the client ends are made here
too (entering the client's namespace, a path under /run/netns, with setns) and then handed to a child
that lives in the client's namespace, as a client process would (a /proc scan finds a namespace
through its processes). Every socket stays open (an fd held) unless the state needs the application
to have closed it, so /proc can name its process.

    python3 tcp-states-peer.py SERVER_IP PORT CLIENT_NETNS_PATH STATE...

STATE, each on its own connection, client end first:
  established     both ESTABLISHED
  fin_wait1       client FIN_WAIT1 / server ESTABLISHED: the server does not read and its receive
                  window is full, so the client's FIN waits behind unsent data (shutdown(SHUT_WR))
  fin_wait2       client FIN_WAIT2 / server CLOSE_WAIT: the client shut down writing, the server
                  acknowledged and holds its end open
  close_wait      client CLOSE_WAIT / server gone: the server closed first, the client does not
                  (the server's end is then the kernel's time-wait remnant, shown as FIN_WAIT2)
  last_ack        client FIN_WAIT2 / server LAST_ACK: after the client's FIN the server fills the
                  client's receive window and shuts down, its FIN waiting behind unsent data
  time_wait       client TIME_WAIT / server gone: the client closed first, then the server

Prints "ready STATE CLIENT_PORT" per connection once it is in its state, then "held"; on "close"
from stdin closes every socket it holds and prints "closed"; exits when stdin ends.
"""
import ctypes
import os
import socket
import sys
import time

SMALL = 4096
CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    # os.setns is Python 3.12+; Debian's python3 may be older.
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def in_netns(path, make):
    """make() runs with the thread in the namespace at `path`; the socket keeps that namespace."""
    here = os.open("/proc/self/ns/net", os.O_RDONLY)
    there = os.open(path, os.O_RDONLY)
    try:
        setns(there)
        return make()
    finally:
        setns(here)
        os.close(here)
        os.close(there)


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def fill(sock):
    """Writes until the peer's receive window and our send buffer are full."""
    sock.setblocking(False)
    chunk = b"x" * 65536
    idle_since = None
    while True:
        try:
            sock.send(chunk)
            idle_since = None
        except BlockingIOError:
            # The window may still open a little as the peer's buffer autotunes: wait until
            # nothing more goes out for a while.
            if idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 0.3:
                break
            time.sleep(0.02)
    sock.setblocking(True)


def start_client_holder(client_ns):
    """A child in the client's namespace that holds the client ends passed to it; returns its channel."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if os.fork() != 0:
        child.close()
        return parent
    parent.close()
    fd = os.open(client_ns, os.O_RDONLY)
    setns(fd)
    os.close(fd)
    held = []
    while True:
        msg, fds, _, _ = socket.recv_fds(child, 16, 64)
        if not msg:
            os._exit(0)
        if msg == b"hold":
            held += [socket.socket(fileno=f) for f in fds]
        elif msg == b"close":
            for s in held:
                s.close()
            held = []
        child.send(b"ok")


def main():
    host, port, client_ns, states = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    listener = socket.socket(family(host), socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by accepted sockets: a small window fills fast.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL)
    listener.bind((host, port))
    listener.listen(64)
    holder = start_client_holder(client_ns)
    held = []
    clients = []
    for state in states:
        def make():
            c = socket.socket(family(host), socket.SOCK_STREAM)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL)
            return c
        client = in_netns(client_ns, make)
        client.connect((host, port))
        server, _ = listener.accept()
        client_port = client.getsockname()[1]
        if state == "established":
            clients.append(client)
            held.append(server)
        elif state == "fin_wait1":
            fill(client)
            client.shutdown(socket.SHUT_WR)
            clients.append(client)
            held.append(server)
        elif state == "fin_wait2":
            client.shutdown(socket.SHUT_WR)
            clients.append(client)
            held.append(server)
        elif state == "close_wait":
            server.close()
            clients.append(client)
        elif state == "last_ack":
            client.shutdown(socket.SHUT_WR)
            assert server.recv(1) == b""
            fill(server)
            server.shutdown(socket.SHUT_WR)
            clients.append(client)
            held.append(server)
        elif state == "time_wait":
            client.close()
            server.recv(1)
            server.close()
        else:
            raise SystemExit(f"unknown state {state}")
        print("ready", state, client_port, flush=True)
    if clients:
        socket.send_fds(holder, [b"hold"], [c.fileno() for c in clients])
        holder.recv(16)
        for c in clients:
            c.close()
    print("held", flush=True)
    for line in sys.stdin:
        if line.strip() == "close":
            holder.send(b"close")
            holder.recv(16)
            for s in held:
                s.close()
            held = []
            print("closed", flush=True)


if __name__ == "__main__":
    main()
