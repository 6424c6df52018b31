#!/usr/bin/env python3
"""firstreq.py -- cold-start timing of a SOCKS5 proxy that must first reach its peer.

Usage: firstreq.py SOCKS_PORT HOST PORT PATH TIMEOUT_S LOGFILE -- CMD...

Starts CMD (the proxy client: `keymesh up` of node A, or `ssh -N -D`), then polls
127.0.0.1:SOCKS_PORT every millisecond until a TCP connect succeeds, and sends one HTTP/1.0
GET for PATH on HOST:PORT through it (SOCKS5, the name resolved by the proxy), retrying until a
complete 200 reply arrives or TIMEOUT_S passes. Prints one line, milliseconds:

    ready=<exec -> SOCKS port accepts> first=<first successful request, connect -> reply> total=<exec -> reply>

`first` of the attempt that succeeded; for keymesh it includes the SSH dial to the peer (dialled
on demand), for `ssh -D` the listener only appears once the SSH session is up. CMD is stopped
(SIGTERM, then SIGKILL after 5 s) before exit, also when this script is terminated.
"""
import os, signal, socket, subprocess, sys, time

port, host, hport, path, timeout, logf = sys.argv[1:7]
assert sys.argv[7] == "--"
cmd = sys.argv[8:]
port, hport, timeout = int(port), int(hport), float(timeout)
child = None


def stop_child(*_):
    if child is not None and child.poll() is None:
        child.terminate()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill(); child.wait()
    if _:
        sys.exit(1)


signal.signal(signal.SIGTERM, stop_child)
signal.signal(signal.SIGINT, stop_child)


def request():
    """One request through the proxy: (time the TCP connect succeeded or None, duration or None)."""
    s = socket.socket()
    s.settimeout(max(0.1, deadline - time.monotonic()))
    tc = None
    try:
        s.connect(("127.0.0.1", port))
        t = tc = time.monotonic()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"\x05\x01\x00")
        if s.recv(2) != b"\x05\x00":
            return tc, None
        h = host.encode()
        s.sendall(b"\x05\x01\x00\x03" + bytes([len(h)]) + h + hport.to_bytes(2, "big"))
        r = b""
        while len(r) < 4:
            x = s.recv(4 - len(r))
            if not x:
                return tc, None
            r += x
        if r[1] != 0:
            return tc, None
        alen = {1: 4, 4: 16}.get(r[3])
        if alen is None:
            alen = s.recv(1)[0]
        need = alen + 2
        while need > 0:
            x = s.recv(need)
            if not x:
                return tc, None
            need -= len(x)
        s.sendall(b"GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path.encode(), h))
        resp = b""
        while True:
            x = s.recv(65536)
            if not x:
                break
            resp += x
        if not resp.startswith(b"HTTP/1.1 200") and not resp.startswith(b"HTTP/1.0 200"):
            return tc, None
        return tc, time.monotonic() - t
    except OSError:
        return tc, None
    finally:
        s.close()


with open(logf, "ab") as lf:
    t0 = time.monotonic()
    deadline = t0 + timeout
    child = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT)
ready = None
try:
    while time.monotonic() < deadline:
        if child.poll() is not None:
            print("FAIL child exited with %d" % child.returncode); sys.exit(1)
        tc, dur = request()
        if tc is not None and ready is None:
            ready = tc - t0
        if dur is not None:
            total = time.monotonic() - t0
            print("ready=%.3f first=%.3f total=%.3f" % (ready * 1000, dur * 1000, total * 1000))
            break
        time.sleep(0.001)
    else:
        print("FAIL timeout"); sys.exit(1)
finally:
    stop_child()
