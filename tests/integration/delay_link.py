#!/usr/bin/env python3
"""A link with a fixed one-way delay, for tests that need distance between namespaces (this
kernel has no netem): every Ethernet frame that arrives on IF1 leaves on IF2 DELAY_MS later,
and the same the other way.

  delay_link.py IF1 IF2 DELAY_MS [MAX_SECONDS]

Runs until killed, or for MAX_SECONDS (default 600). Both directions keep their order (one
delay for every frame); a frame that cannot be sent (too big for the link, a full device
queue) is dropped, as a link would drop it. The interfaces should carry no addresses and
IPv6 should be off on them, so that the kernel adds no frames of its own.
"""
import collections
import select
import socket
import sys
import time

ETH_P_ALL = 3
PACKET_OUTGOING = 4  # sll_pkttype of a frame this host sent (our own forwards included)


def main():
    names, delay = sys.argv[1:3], float(sys.argv[3]) / 1000
    end = time.monotonic() + (float(sys.argv[4]) if len(sys.argv) > 4 else 600)
    socks = []
    for name in names:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((name, 0))
        s.setblocking(False)
        socks.append(s)
    due = collections.deque()  # (time to send, socket to send on, frame), in time order
    while time.monotonic() < end:
        now = time.monotonic()
        wait = min(0.5, max(0.0, due[0][0] - now)) if due else 0.5
        ready, _, _ = select.select(socks, [], [], wait)
        now = time.monotonic()
        for i, s in enumerate(socks):
            if s not in ready:
                continue
            for _ in range(256):  # bounded per wake-up, so the other side gets its turn
                try:
                    frame, addr = s.recvfrom(65536)
                except BlockingIOError:
                    break
                if addr[2] != PACKET_OUTGOING:
                    due.append((now + delay, socks[1 - i], frame))
        while due and due[0][0] <= time.monotonic():
            _, out, frame = due.popleft()
            try:
                out.send(frame)
            except OSError:
                pass


if __name__ == '__main__':
    main()
