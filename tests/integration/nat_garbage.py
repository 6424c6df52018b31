#!/usr/bin/env python3
"""A hostile "router" for tests/integration/nat.sh: answers UPnP discovery (SSDP) with a
device description URL whose server returns garbage, and NAT-PMP requests with garbage,
truncated or nonsensical answers (a public address of 0.0.0.0, a mapping of port 0, a
lifetime of 0, the wrong opcode). Usage: nat_garbage.py LAN-ADDRESS. Runs until killed."""
import os
import socket
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

LAN = sys.argv[1]
HTTP_PORT = 5000


def natpmp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((LAN, 5351))
    n = 0
    while True:
        req, peer = s.recvfrom(64)
        op = req[1] if len(req) > 1 else 0
        k = n % 6
        n += 1
        if k == 0:
            out = os.urandom(1 + n % 40)  # noise
        elif k == 1:
            out = struct.pack("!BBHI", 0, 128 + op, 0, 1)  # truncated answer
        elif k == 2:
            out = struct.pack("!BBHII", 0, 128, 0, 1, 0)  # public address 0.0.0.0
        elif k == 3:
            out = struct.pack("!BBHIHHI", 0, 128 + op, 0, 1, 15022, 0, 3600)  # port 0
        elif k == 4:
            out = struct.pack("!BBHIHHI", 0, 128 + op, 0, 1, 15022, 15022, 0)  # lifetime 0
        else:
            out = struct.pack("!BBHIHHI", 9, 200, 0xFFFF, 1, 1, 1, 0xFFFFFFFF)  # bad version
        s.sendto(out, peer)


def ssdp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", 1900))
    mreq = socket.inet_aton("239.255.255.250") + socket.inet_aton(LAN)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    while True:
        req, peer = s.recvfrom(2048)
        if not req.startswith(b"M-SEARCH"):
            continue
        st = b"urn:schemas-upnp-org:device:InternetGatewayDevice:1"
        for line in req.split(b"\r\n"):
            if line.lower().startswith(b"st:"):
                st = line[3:].strip()
        out = (b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: " + st +
               b"\r\nUSN: uuid:0::" + st + b"\r\nLOCATION: http://" + LAN.encode() +
               b":%d/desc.xml\r\n\r\n" % HTTP_PORT)
        s.sendto(out, peer)


class Garbage(BaseHTTPRequestHandler):
    n = 0

    def answer(self):
        Garbage.n += 1
        k = Garbage.n % 3
        if k == 0:
            body = os.urandom(3000)
        elif k == 1:
            body = (b"<?xml version=\"1.0\"?><root><device><deviceType>urn:schemas-upnp-org:"
                    b"device:InternetGatewayDevice:1</deviceType><serviceList><service>"
                    b"<serviceType>urn:schemas-upnp-org:service:WANIPConnection:1"
                    b"</serviceType><controlURL>" + b"A" * 5000 + b"</controlURL>")
        else:
            body = b"<root><URLBase>\x00\xff</URLBase><<<<>>>&&&;;" * 50
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = answer
    do_POST = answer

    def log_message(self, *args):
        pass


threading.Thread(target=natpmp, daemon=True).start()
threading.Thread(target=ssdp, daemon=True).start()
HTTPServer((LAN, HTTP_PORT), Garbage).serve_forever()
