#!/usr/bin/env python3
"""Helpers for tests/integration/mesh.sh and openssh.sh (servers and clients, stdlib only).

  mesh_helper.py http PORT DIR        HTTP server on 127.0.0.1:PORT serving DIR, plus
                                      /big/MIB (a MIB MiB deterministic pattern) and
                                      /slow (16 KiB every 50 ms for at most 60 s)
  mesh_helper.py echo PORT            TCP echo server on 127.0.0.1:PORT
  mesh_helper.py sink PORT            TCP server on 127.0.0.1:PORT: reads to EOF, answers
                                      the sha256 (hex) of what it read, closes
  mesh_helper.py gen MIB              writes /big/MIB's body to stdout
  mesh_helper.py sha MIB              sha256 of /big/MIB's body
  mesh_helper.py socks PROXYPORT HOST PORT
                                      one SOCKS5 CONNECT; prints the reply code (decimal) or
                                      "closed" if the proxy closed without a reply
  mesh_helper.py bigecho PROXYPORT HOST PORT MIB
                                      one SOCKS5 stream to an echo server: sends MIB MiB
                                      while reading the echo; prints "match" or what differs
  mesh_helper.py many PROXYPORT HOST PORT N KEYMESH DIR...
                                      N concurrent SOCKS5 streams to an echo server, each with
                                      a unique payload; while all are open, saves
                                      `keymesh status --json --dir DIR` as DIR.many.json for
                                      each DIR; prints "ok=K fail=F"
"""
import asyncio
import hashlib
import http.server
import random
import socket
import sys
import time


def pattern(mib):
    """MIB chunks of 1 MiB: one random block whose first 8 bytes are the chunk number, so a
    lost, repeated or reordered chunk changes the hash."""
    blk = bytearray(random.Random(20240611).randbytes(1 << 20))
    for i in range(mib):
        blk[0:8] = i.to_bytes(8, "big")
        yield blk


def http_server(port, root):
    class H(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=root, **k)

        def do_GET(self):
            if self.path.startswith("/big/"):
                mib = int(self.path[5:])
                self.send_response(200)
                self.send_header("Content-Length", str(mib << 20))
                self.end_headers()
                for b in pattern(mib):
                    self.wfile.write(b)
            elif self.path == "/slow":
                self.send_response(200)
                self.send_header("Content-Length", str(1 << 30))
                self.end_headers()
                end = time.monotonic() + 60
                while time.monotonic() < end:
                    self.wfile.write(b"s" * 16384)
                    self.wfile.flush()
                    time.sleep(0.05)
            else:
                super().do_GET()

    http.server.ThreadingHTTPServer.daemon_threads = True
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
    srv.serve_forever()


async def echo_server(port):
    async def handle(r, w):
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with srv:
        await srv.serve_forever()


async def sink_server(port):
    async def handle(r, w):
        h = hashlib.sha256()
        try:
            while True:
                data = await r.read(1 << 16)
                if not data:
                    break
                h.update(data)
            w.write(h.hexdigest().encode() + b"\n")
            await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", port)
    async with srv:
        await srv.serve_forever()


async def bigecho(proxy_port, host, port, mib):
    r, w, rep = await socks_open(proxy_port, host, port)
    if rep != 0:
        return "socks reply %s" % rep
    want, got = hashlib.sha256(), hashlib.sha256()
    total = mib << 20

    async def send():
        for b in pattern(mib):
            want.update(b)
            w.write(b)
            await w.drain()
        w.write_eof()

    async def recv():
        n = 0
        while True:
            d = await r.read(1 << 16)
            if not d:
                return n
            got.update(d)
            n += len(d)

    _, n = await asyncio.wait_for(asyncio.gather(send(), recv()), 120)
    w.close()
    if n != total:
        return "echoed %d of %d bytes" % (n, total)
    return "match" if want.digest() == got.digest() else "content differs"


async def socks_open(proxy_port, host, port):
    """Returns (reader, writer, rep); rep is None when the proxy closed without a reply."""
    r, w = await asyncio.open_connection("127.0.0.1", proxy_port)
    w.write(b"\x05\x01\x00")
    await w.drain()
    if await r.readexactly(2) != b"\x05\x00":
        raise RuntimeError("bad method reply")
    h = host.encode()
    w.write(b"\x05\x01\x00\x03" + bytes([len(h)]) + h + port.to_bytes(2, "big"))
    await w.drain()
    try:
        head = await r.readexactly(4)
    except asyncio.IncompleteReadError:
        return r, w, None
    if head[1] == 0:
        atyp = head[3]
        n = 4 if atyp == 1 else 16 if atyp == 4 else (await r.readexactly(1))[0]
        await r.readexactly(n + 2)
    return r, w, head[1]


def socks_probe(proxy_port, host, port):
    async def run():
        r, w, rep = await asyncio.wait_for(socks_open(proxy_port, host, port), 20)
        w.close()
        return rep

    try:
        rep = asyncio.run(run())
    except (asyncio.TimeoutError, TimeoutError):
        print("timeout")
        return
    print("closed" if rep is None else rep)


async def many(proxy_port, host, port, n, km, dirs):
    async def one(i):
        r, w, rep = await socks_open(proxy_port, host, port)
        if rep != 0:
            w.close()
            raise RuntimeError("socks reply %s" % rep)
        payload = (b"stream %06d " % i) * (50 + i % 50)
        w.write(payload)
        await w.drain()
        got = await r.readexactly(len(payload))
        if got != payload:
            w.close()
            raise RuntimeError("stream %d: echo differs" % i)
        return w

    res = await asyncio.wait_for(
        asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True), 90)
    # Every stream is still open: snapshot the daemons' view.
    for d in dirs:
        p = await asyncio.create_subprocess_exec(km, "status", "--json", "--dir", d,
                                                 stdout=asyncio.subprocess.PIPE)
        out, _ = await p.communicate()
        with open(d + ".many.json", "wb") as f:
            f.write(out)
    errs = [x for x in res if isinstance(x, BaseException)]
    for x in res:
        if not isinstance(x, BaseException):
            x.close()
    for e in errs[:5]:
        print("error:", repr(e))
    print("ok=%d fail=%d" % (n - len(errs), len(errs)))


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "http":
        http_server(int(args[0]), args[1])
    elif mode == "echo":
        asyncio.run(echo_server(int(args[0])))
    elif mode == "sink":
        asyncio.run(sink_server(int(args[0])))
    elif mode == "gen":
        out = sys.stdout.buffer
        for b in pattern(int(args[0])):
            out.write(b)
        out.flush()
    elif mode == "bigecho":
        print(asyncio.run(bigecho(int(args[0]), args[1], int(args[2]), int(args[3]))))
    elif mode == "sha":
        h = hashlib.sha256()
        for b in pattern(int(args[0])):
            h.update(b)
        print(h.hexdigest())
    elif mode == "socks":
        socks_probe(int(args[0]), args[1], int(args[2]))
    elif mode == "many":
        asyncio.run(many(int(args[0]), args[1], int(args[2]), int(args[3]), args[4], args[5:]))
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
