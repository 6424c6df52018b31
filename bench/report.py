#!/usr/bin/env python3
"""report.py -- markdown results of bench/mesh.sh.

  report.py RESULTS_DIR [--prev PREV_RESULTS_DIR]
                                   print the results section (from raw.tsv, meta.tsv, contention.tsv);
                                   with --prev, compare the receiving end's memory under parallel
                                   load with that earlier run (its raw.tsv and meta.tsv)
  report.py --into DOC REPORT_MD   put REPORT_MD between the markers in DOC (created if missing);
                                   text outside the markers is kept
"""
import collections, os, statistics, sys

BEGIN, END = "<!-- BEGIN bench/mesh.sh results -->", "<!-- END bench/mesh.sh results -->"

if sys.argv[1] == "--into":
    doc, rep = sys.argv[2], open(sys.argv[3]).read().rstrip("\n")
    old = open(doc).read() if os.path.exists(doc) else (
        "# Benchmarks\n\nMeasured by `bench/mesh.sh` (see its header for what each metric means).\n\n"
        + BEGIN + "\n" + END + "\n")
    if BEGIN not in old or END not in old:
        old = old.rstrip("\n") + "\n\n" + BEGIN + "\n" + END + "\n"
    head, rest = old.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    open(doc, "w").write(head + BEGIN + "\n" + rep + "\n" + END + tail)
    sys.exit(0)

R = sys.argv[1]
PREV = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--prev" and sys.argv[3] else None


def load(d):
    raw, fails = collections.defaultdict(list), []
    for line in open(os.path.join(d, "raw.tsv")):
        m, v, x = line.rstrip("\n").split("\t", 2)
        if m == "fail":
            fails.append((v, x))
        else:
            raw[(m, v)].append(float(x))
    return raw, fails, dict(l.rstrip("\n").split("\t", 1) for l in open(os.path.join(d, "meta.tsv")))


raw, fails, meta = load(R)
praw, pmeta = (load(PREV)[0::2] if PREV else (None, None))
cont = collections.defaultdict(int)
for l in open(os.path.join(R, "contention.tsv")):
    m, p = l.split("\t"); cont[m] = max(cont[m], int(p))


def q(v, p):
    v = sorted(v); k = (len(v) - 1) * p; f = int(k); c = min(f + 1, len(v) - 1)
    return v[f] + (v[c] - v[f]) * (k - f)


def med(m, v):
    x = raw.get((m, v)); return statistics.median(x) if x else None


def p90(m, v):
    x = raw.get((m, v)); return q(x, 0.9) if x else None


def fmt(x, d=1):
    if x is None: return "FAIL"
    return ("%%.%df" % d) % x


def ratio(a, b):
    return "%.2f" % (a / b) if a is not None and b else "-"


def failed(v):
    return any(fv == v for fv, _ in fails)


def met(ok):
    return "n/a (no data)" if ok is None else ("**yes**" if ok else "**no**")


def mrange(m, v, d=1):
    x = raw.get((m, v))
    if not x: return "FAIL"
    if len(x) == 1: return fmt(x[0], d)
    return "%s (%s-%s)" % (fmt(statistics.median(x), d), fmt(min(x), d), fmt(max(x), d))


CIPH = [("aes", "aes128-gcm@openssh.com"), ("chacha", "chacha20-poly1305@openssh.com")]
ref = {"aes": 4400.0, "chacha": 2200.0}
o = []
P = o.append
P("## Results")
P("")
P("Produced by:")
P("")
P("```")
P("bench/deps.sh   # once")
P("%s bench/mesh.sh" % meta["env"])
P("```")
P("")
P("| | |")
P("|---|---|")
P("| date | %s |" % meta["date"])
P("| CPU | %s |" % meta["cpu"])
P("| kernel | %s |" % meta["kernel"])
P("| OS | %s |" % meta["os"])
P("| keymesh | %s |" % meta["keymesh"])
P("| baseline | %s (sshd on the same machine) |" % meta["openssh"])
P("| client / server | %s |" % meta["curl"])
P("")
P("Both ends and the client and server share the same %s, so throughput is a lower bound of two "
  "machines and CPU-seconds per GB is the figure that carries over. Medians; ranges are min-max." % meta["cpu"].split("(")[-1].rstrip(")"))
P("")

# --- throughput
P("### Single-stream throughput (Mbit/s, curl of one %s MiB file through SOCKS5)" % meta["env"].split("BIG_MB=")[1].split()[0])
P("")
P("Target (DESIGN.md 10): at least OpenSSH `ssh -D` with the same cipher (reference there: ~4.4 Gbit/s aes128-gcm, ~2.2 Gbit/s chacha20).")
P("")
P("| cipher | keymesh | OpenSSH -D | direct TCP | keymesh/OpenSSH | target met |")
P("|---|---|---|---|---|---|")
for c, name in CIPH:
    k, s, d = med("tput", "km-" + c), med("tput", "ssh-" + c), med("tput", "direct")
    P("| %s | %s | %s | %s | %s | %s |" % (name, mrange("tput", "km-" + c, 0), mrange("tput", "ssh-" + c, 0),
                                           mrange("tput", "direct", 0), ratio(k, s),
                                           met(None if k is None or s is None else k >= s)))
P("")
par = meta["env"].split("PAR=")[1].split()[0] if "PAR=" in meta["env"] else "?"
P("%s simultaneous downloads through the same tunnel (aggregate Mbit/s, one run; a load check, no target):" % par)
P("")
P("| cipher | keymesh | OpenSSH -D | direct TCP | keymesh/OpenSSH |")
P("|---|---|---|---|---|")
for c, name in CIPH:
    k, s, d = med("tput.par", "km-" + c), med("tput.par", "ssh-" + c), med("tput.par", "direct")
    P("| %s | %s | %s | %s | %s |" % (name, fmt(k, 0), fmt(s, 0), fmt(d, 0), ratio(k, s)))
P("")

# --- cpu
P("### CPU-seconds per GB of payload (both ends: A + B)")
P("")
P("user+system time of keymesh A and B, or of `ssh` and the sshd processes of that connection, per 10^9 bytes. Target: fewer than OpenSSH with the same cipher.")
P("")
P("| cipher | keymesh (A + B) | OpenSSH (ssh + sshd) | keymesh/OpenSSH | target met |")
P("|---|---|---|---|---|")
for c, name in CIPH:
    k, s = med("cpu", "km-" + c), med("cpu", "ssh-" + c)
    kd = "%s (%s + %s)" % (fmt(k, 2), fmt(med("cpu.A", "km-" + c), 2), fmt(med("cpu.B", "km-" + c), 2)) if k is not None else "FAIL"
    sd = "%s (%s + %s)" % (fmt(s, 2), fmt(med("cpu.A", "ssh-" + c), 2), fmt(med("cpu.B", "ssh-" + c), 2)) if s is not None else "FAIL"
    P("| %s | %s | %s | %s | %s |" % (name, kd, sd, ratio(k, s), met(None if k is None or s is None else k < s)))
P("")
P("Direct TCP has no tunnel process (the kernel does the work); it has no row here.")
P("")

# --- latency
for m, title, note in (
        ("lat.new", "Small request, new connection per request (ms, curl time_total of a 3-byte file)",
         "Each request is a new curl: a new TCP connection, and through the tunnels a new SOCKS5 handshake and a new SSH channel on the already established session."),
        ("lat.ka", "Small request on a kept-alive connection (ms)",
         "One curl fetching the file repeatedly over one connection (the first request is not counted): the bare round trip through the tunnel.")):
    n = len(raw.get((m, "direct"), []))
    P("### " + title)
    P("")
    P(note + " Target: within 1 ms of direct (median). %d samples per variant." % n)
    P("")
    P("| cipher | keymesh median / p90 | OpenSSH median / p90 | direct median / p90 | keymesh/OpenSSH (median) | keymesh - direct | target met |")
    P("|---|---|---|---|---|---|---|")
    d = med(m, "direct")
    for c, name in CIPH:
        k, s = med(m, "km-" + c), med(m, "ssh-" + c)
        P("| %s | %s / %s | %s / %s | %s / %s | %s | %s | %s |" % (
            name, fmt(k, 3), fmt(p90(m, "km-" + c), 3), fmt(s, 3), fmt(p90(m, "ssh-" + c), 3),
            fmt(d, 3), fmt(p90(m, "direct"), 3), ratio(k, s),
            "%+.3f ms" % (k - d) if k is not None and d is not None else "-",
            met(None if k is None or d is None else k - d <= 1.0)))
    P("")

# --- setup
P("### New peer connection (ms, cold start, aes128-gcm)")
P("")
P("The client end is started from nothing, SETUP_N times: `keymesh up` for node A (B keeps running), "
  "or `ssh -N -D`. *ready*: exec until its SOCKS5 port accepts. *first request*: that first request "
  "through SOCKS5 (connect to reply); keymesh dials its peer on demand, so this includes the SSH "
  "handshake, authentication and channel open, while `ssh -D` only listens once its session is up. "
  "*total*: exec until the first reply. `ssh true`: hyperfine of `ssh -o BatchMode=yes root@B true`. "
  "Target: a new peer connection under 10 ms on a veth link; keymesh's is the *first request* (less "
  "the steady-state new-connection latency above for the handshake alone).")
P("")
P("| | keymesh median / p90 | OpenSSH median / p90 | keymesh/OpenSSH (median) |")
P("|---|---|---|---|")
for m, label in (("setup.ready", "ready (exec to listening)"), ("setup.first", "first request"),
                 ("setup.total", "total (exec to first reply)")):
    k, s = med(m, "km-aes"), med(m, "ssh-aes")
    P("| %s | %s / %s | %s / %s | %s |" % (label, fmt(k, 2), fmt(p90(m, "km-aes"), 2), fmt(s, 2), fmt(p90(m, "ssh-aes"), 2), ratio(k, s)))
s = med("setup.ssh-true", "ssh-aes")
P("| `ssh root@B true` (hyperfine) | - | %s / %s | - |" % (fmt(s, 2), fmt(p90("setup.ssh-true", "ssh-aes"), 2)))
P("")
kf, kl = med("setup.first", "km-aes"), med("lat.new", "km-aes")
if kf is not None:
    est = kf - (kl or 0)
    P("keymesh new peer connection: first request %.2f ms median, of which about %.2f ms is the "
      "handshake (first request minus the %.2f ms of a request on an established session). "
      "Target < 10 ms: %s." % (kf, est, kl or 0, met(kf < 10) if kf < 10 or est >= 10 else
                                "**yes** for the handshake alone (%.2f ms), **no** for the whole first request" % est))
else:
    P("keymesh new peer connection: FAIL (no successful cold start). Target < 10 ms: n/a.")
P("")

# --- memory
P("### Memory (MiB; A = client end, B = server end)")
P("")
P("VmRSS after warm-up (idle), the highest VmRSS sampled every 0.1 s during the downloads (load), "
  "VmHWM at the end (peak over the whole run, the parallel downloads included), and VmRSS 2 s after the "
  "last download (after). OpenSSH B is the "
  "sshd process(es) serving that connection, not the listener. Target: idle daemon under 3 MiB RSS (each keymesh end).")
P("")
P("| cipher | end | keymesh idle / load / parallel / HWM / after | OpenSSH idle / load / parallel / HWM / after | keymesh/OpenSSH (idle) | idle target met |")
P("|---|---|---|---|---|---|")
for c, name in CIPH:
    for e in "AB":
        g = lambda m, v: (med(m, v) / 1024 if med(m, v) is not None else None)
        k = [g("rss.%s.%s" % (x, e), "km-" + c) for x in ("idle", "load", "par", "hwm", "after")]
        s = [g("rss.%s.%s" % (x, e), "ssh-" + c) for x in ("idle", "load", "par", "hwm", "after")]
        P("| %s | %s | %s | %s | %s | %s |" % (name, e, " / ".join(fmt(x, 2) for x in k),
                                            " / ".join(fmt(x, 2) for x in s), ratio(k[0], s[0]),
                                            met(None if k[0] is None else k[0] < 3.0)))
P("")

# --- the receiving end under parallel load, against an earlier run
P("Receiving end under parallel load: keymesh A gets the data from B over SSH and writes it to the "
  "%s curls, so it is where a channel window that is not respected shows up as memory. Highest VmRSS "
  "sampled during the parallel downloads, and VmHWM at the end of the run (MiB)%s." % (
      par, "; *previous*: the run of %s, %s" % (pmeta.get("keymesh", "?").split("; ", 1)[-1], pmeta.get("date", "?"))
      if pmeta else ""))
P("")
P("| cipher | keymesh A parallel peak | previous | this/previous | keymesh A HWM | previous | this/previous | OpenSSH ssh parallel peak |")
P("|---|---|---|---|---|---|---|---|")
for c, name in CIPH:
    def mib(r, m, v):
        x = r.get((m, v)) if r is not None else None
        return statistics.median(x) / 1024 if x else None
    kp, pp = mib(raw, "rss.par.A", "km-" + c), mib(praw, "rss.par.A", "km-" + c)
    kh, ph = mib(raw, "rss.hwm.A", "km-" + c), mib(praw, "rss.hwm.A", "km-" + c)
    P("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
        name, fmt(kp, 1), fmt(pp, 1) if praw is not None else "-", ratio(kp, pp),
        fmt(kh, 1), fmt(ph, 1) if praw is not None else "-", ratio(kh, ph), fmt(mib(raw, "rss.par.A", "ssh-" + c), 1)))
P("")

# --- summary of targets, problems, contention
P("### Failures and caveats")
P("")
if fails:
    for v, x in fails:
        P("- **%s**: %s" % (v, x))
else:
    P("- No failures: every download was complete, every request answered, no tunnel process died.")
runs = meta["env"].split("RUNS=")[1].split()[0] if "RUNS=" in meta["env"] else "?"
done = []
for v in ("km-aes", "km-chacha", "ssh-aes", "ssh-chacha", "direct"):
    bad = sum(1 for fv, x in fails if fv == v and x.startswith("download "))
    pbad = sum(int(x.split()[0]) for fv, x in fails if fv == v and "parallel downloads incomplete" in x)
    tried = ("tput.par", v) in raw or pbad
    if not tried and bad == 0 and ("tput", v) not in raw:
        continue                                    # not in VARIANTS
    done.append("%s %d/%d + %s/%s" % (v, len(raw.get(("tput", v), [])), len(raw.get(("tput", v), [])) + bad,
                                      (int(par) - pbad) if tried and par.isdigit() else "-", par))
P("- Complete downloads (single-stream of %s runs + parallel of %s): %s." % (runs, par, ", ".join(done)))
busy = sorted(((m, p) for m, p in cont.items() if p >= 10), key=lambda t: -t[1])
P("- Other processes on this shared machine used at most %s%% of its CPU during a measurement%s." % (
    meta.get("maxforeign", "?"),
    "; >= 10% during: " + ", ".join("%s (%d%%)" % t for t in busy) if busy else ""))
P("")
print("\n".join(o))
