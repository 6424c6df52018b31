#!/usr/bin/env python3
"""Send one mDNS response for a made-up node whose signed path list carries a bad signature.

Used by lan.sh: the receiving daemon must drop the record and count it as forged. Run inside
the sender's network namespace: mdns_forge.py SOURCE-IPV4.
"""
import base64
import os
import socket
import struct
import sys


def name(s):
    return b"".join(bytes([len(l)]) + l.encode() for l in s.split(".")) + b"\0"


def rr(n, rtype, rclass, ttl, rdata):
    return name(n) + struct.pack(">HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def main():
    src = sys.argv[1]
    key = os.urandom(32)
    nid = base64.b32encode(key).decode().lower().rstrip("=")
    inst = nid + "._keymesh._tcp.local"
    host = nid + ".local"
    # "KMA1", version 1, key, seq, expiry, no paths, then 64 bytes that are no signature.
    blob = b"KMA1" + bytes([1]) + key + struct.pack(">QQ", 1, 2**40) + bytes([0]) + os.urandom(64)
    txt = b"".join(bytes([len(x)]) + x for x in
                   [b"v=keymesh1", b"k=" + base64.b64encode(key), b"a=" + base64.b64encode(blob)])
    answers = [
        rr("_keymesh._tcp.local", 12, 1, 4500, name(inst)),
        rr(inst, 33, 0x8001, 120, struct.pack(">HHH", 0, 0, 15022) + name(host)),
        rr(inst, 16, 0x8001, 4500, txt),
        rr(host, 1, 0x8001, 120, socket.inet_aton(src)),
    ]
    msg = struct.pack(">HHHHHH", 0, 0x8400, 0, len(answers), 0, 0) + b"".join(answers)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("0.0.0.0", 5353))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(src))
    s.sendto(msg, ("224.0.0.251", 5353))
    print(nid)


if __name__ == "__main__":
    main()
