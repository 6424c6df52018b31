#!/usr/bin/env python3
"""Traffic for tests/integration/tun.sh (every wait bounded).

  sink HOST PORT FILE        accept one connection, write the sha256 of all it sends to FILE
  source HOST PORT N         accept one connection, send N zero bytes, close
  echo HOST PORT             echo server for many connections (asyncio, backlog 8192)
  send ADDR PORT             stdin -> ADDR:PORT, wait for the peer to close, print sha256
  fetch ADDR PORT            print the sha256 of everything ADDR:PORT sends
  many ADDR PORT N           N connections open at once, each echoes its own line back
  hostile IFACE SELF PEER    write malformed IPv6 packets onto the TUN device IFACE
  flood ADDR PORT IFACE SELF N   keep one connection open, get N SYNs through IFACE to the
                                 daemon, check the connection still echoes
"""
import asyncio
import collections
import hashlib
import os
import random
import socket
import struct
import sys
import time


def listener(host, port):
    s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(16)
    s.settimeout(120)
    return s


def sink(host, port, out):
    c, _ = listener(host, int(port)).accept()
    c.settimeout(120)
    h = hashlib.sha256()
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        h.update(b)
    c.close()
    with open(out + '.tmp', 'w') as f:
        f.write(h.hexdigest())
    os.rename(out + '.tmp', out)


def source(host, port, n):
    c, _ = listener(host, int(port)).accept()
    c.settimeout(120)
    n = int(n)
    z = bytes(1 << 20)
    while n > 0:
        k = min(n, len(z))
        c.sendall(z[:k])
        n -= k
    c.close()


async def echo_main(host, port):
    async def handle(r, w):
        try:
            while True:
                b = await r.read(65536)
                if not b:
                    break
                w.write(b)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        w.close()
    srv = await asyncio.start_server(handle, host, int(port), backlog=8192)
    async with srv:
        await asyncio.sleep(600)


def connect(addr, port):
    s = socket.create_connection((addr, int(port)), timeout=30)
    s.settimeout(120)
    return s


def send(addr, port):
    s = connect(addr, port)
    h = hashlib.sha256()
    while True:
        b = sys.stdin.buffer.read(1 << 20)
        if not b:
            break
        h.update(b)
        s.sendall(b)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)  # the sink closes after reading everything
    print(h.hexdigest())


def fetch(addr, port):
    s = connect(addr, port)
    h = hashlib.sha256()
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        h.update(b)
    print(h.hexdigest())


async def many_main(addr, port, n):
    """Open n connections at once, then echo a line on each. Prints one summary line with the
    reasons of any failures (the test puts it in its check's name)."""
    # Each open waits as long as the kernel's own connect does (tcp_syn_retries 6: about
    # 127 s), so the bound only catches a hang. A SYN dropped at a full device queue is
    # retried after 1, 2, 4 ... 32 s, so under a sanitizer on a loaded machine an open can
    # take over a minute without anything being wrong; 90 s timed out 11 of 2,000 once.
    async def one(i):
        return await asyncio.wait_for(asyncio.open_connection(addr, int(port)), 150)
    conns = await asyncio.gather(*[one(i) for i in range(n)], return_exceptions=True)
    errors = collections.Counter(type(c).__name__ for c in conns if isinstance(c, BaseException))
    opened = [(i, c) for i, c in enumerate(conns) if not isinstance(c, BaseException)]
    for i, (r, w) in opened:
        w.write(f'line {i}\n'.encode())

    async def check(i, r, w):
        try:
            line = await asyncio.wait_for(r.readline(), 90)
            return line == f'line {i}\n'.encode()
        except (OSError, asyncio.TimeoutError) as e:
            errors['echo ' + type(e).__name__] += 1
            return False
        finally:
            w.close()
    ok = await asyncio.gather(*[check(i, r, w) for i, (r, w) in opened])
    print(f'{len(opened)} of {n} opened at once, {sum(ok)} echoed'
          + (f'; failures: {dict(errors)}' if errors else ''))
    return sum(ok) == n


def csum(data):
    if len(data) % 2:
        data += b'\0'
    s = sum(struct.unpack(f'!{len(data) // 2}H', data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def ip6(src, dst, nh, payload, plen=None):
    plen = len(payload) if plen is None else plen
    return struct.pack('!IHBB', 6 << 28, plen, nh, 64) + src + dst + payload


def tcp(src, dst, sport, dport, flags=0x02, seq=1, off=5):
    h = struct.pack('!HHIIBBHHH', sport, dport, seq, 0, off << 4, flags, 65535, 0, 0)
    c = csum(src + dst + struct.pack('!IxxxB', len(h), 6) + h)
    return h[:16] + struct.pack('!H', c) + h[18:]


def packet_socket(iface):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x86DD))
    return s, (iface, 0x86DD)


def hostile(iface, self_vip, peer_vip):
    s, to = packet_socket(iface)
    me, peer = socket.inet_pton(socket.AF_INET6, self_vip), socket.inet_pton(socket.AF_INET6, peer_vip)
    other = socket.inet_pton(socket.AF_INET6, 'fd6b::dead:beef')
    good = tcp(me, peer, 40000, 8000)
    pkts = [
        b'\x60\x00',                                        # truncated header
        ip6(me, peer, 6, good, plen=200),                   # payload length past the end
        ip6(me, peer, 6, good) + b'junk',                   # trailing bytes
        ip6(me, peer, 44, b'\x06\x00\x00\x01' + b'\0' * 4 + good),  # fragment header
        ip6(me, peer, 6, tcp(me, peer, 40001, 8000, off=2)),  # TCP data offset too small
        ip6(me, peer, 6, tcp(me, peer, 40002, 8000, off=15)),  # data offset past the end
        ip6(me, peer, 6, tcp(me, peer, 0, 8000)),           # port 0
        ip6(other, peer, 6, tcp(other, peer, 40003, 8000)),  # spoofed mesh source
        ip6(me, peer, 58, b'\x87\x00\x00\x00' + b'\0' * 20),  # neighbour solicitation
        b'\x45' + b'\0' * 39,                               # IPv4
    ]
    for p in pkts:
        s.sendto(p, to)


def tx_dropped(iface):
    with open(f'/sys/class/net/{iface}/statistics/tx_dropped') as f:
        return int(f.read())


def flood(addr, port, iface, self_vip, n):
    """Deliver n SYNs to the daemon through the device. The device queue holds 500 packets and
    drops (counting tx_dropped) what a busy daemon has not read yet, so SYNs are sent in paced
    batches until n got through, within 60 s and 40,000 source ports."""
    live = connect(addr, port)
    live.sendall(b'before\n')
    assert live.recv(100) == b'before\n'
    s, to = packet_socket(iface)
    # From an address nobody owns, so the SYN-ACKs go nowhere and each SYN holds a slot until
    # the handshake times out, as in a real flood.
    me, peer = socket.inet_pton(socket.AF_INET6, '2001:db8::66'), socket.inet_pton(socket.AF_INET6, addr)
    n, sent, dropped0 = int(n), 0, tx_dropped(iface)
    deadline = time.monotonic() + 60
    while sent < 40000 and time.monotonic() < deadline:
        delivered = sent - (tx_dropped(iface) - dropped0)
        if delivered >= n:
            break
        for _ in range(100):
            s.sendto(ip6(me, peer, 6, tcp(me, peer, 20000 + sent, int(port),
                                          seq=random.getrandbits(32))), to)
            sent += 1
        time.sleep(0.005)
    delivered = sent - (tx_dropped(iface) - dropped0)
    print(f'flood: {sent} SYNs sent, {delivered} delivered', file=sys.stderr)
    live.sendall(b'after\n')
    got = live.recv(100)
    print(f'live connection after the flood: {got!r}', file=sys.stderr)
    sys.exit(0 if got == b'after\n' and delivered >= n else 1)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == 'sink':
        sink(*args)
    elif cmd == 'source':
        source(*args)
    elif cmd == 'echo':
        asyncio.run(echo_main(*args))
    elif cmd == 'send':
        send(*args)
    elif cmd == 'fetch':
        fetch(*args)
    elif cmd == 'many':
        sys.exit(0 if asyncio.run(many_main(args[0], args[1], int(args[2]))) else 1)
    elif cmd == 'hostile':
        hostile(*args)
    elif cmd == 'flood':
        flood(*args)
    else:
        sys.exit(f'unknown command {cmd}')


if __name__ == '__main__':
    main()
