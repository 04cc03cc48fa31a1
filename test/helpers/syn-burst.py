"""Creates real conntrack flows fast: TCP SYNs from a raw socket (the kernel adds the IP header),
one per (source port, destination port) pair, to an address where nobody answers, so that each stays a SYN_SENT flow until its timeout.

syn-burst.py SRC DST COUNT [FIRST_SPORT [FIRST_DPORT]]   prints "sent N" when done.
"""
import socket
import struct
import sys


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def main():
    src, dst, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    first = int(sys.argv[4]) if len(sys.argv) > 4 else 1024
    first_dport = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    pseudo_head = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, 20)
    sent = 0
    ports = 65535 - first
    for i in range(count):
        sport = first + i % ports
        dport = first_dport + i // ports
        header = struct.pack("!HHIIBBHHH", sport, dport, i, 0, 5 << 4, 0x02, 65535, 0, 0)
        csum = checksum(pseudo_head + header)
        header = header[:16] + struct.pack("!H", csum) + header[18:]
        while True:
            try:
                raw.sendto(header, (dst, 0))
                break
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno == 105:  # ENOBUFS from the device queue: try again
                    continue
                raise
        sent += 1
    print("sent", sent, flush=True)


main()
