#!/usr/bin/env python3
"""handoff's benchmarks, run by scripts/bench.sh (which installs the tools and builds first).

Every compared path gets a fresh topology of network namespaces (a backend that still holds
TIME_WAIT sockets from an earlier run rejects reused client ports: PAWS), paths alternate
within each round, and figures are medians over rounds. Traffic only goes to addresses inside
the namespaces this script makes; every loop is bounded; everything is torn down on exit
(nginx's master and workers, HAProxy and the netkit servers with the namespaces).

Sections (all by default; --only SECTION[,SECTION...] picks some, always run in this order):
  curves     wrk against nginx in b over the four paths (no NAT, a hand-written DNAT rule,
             handoff, HAProxy in tcp mode at its best documented settings) at 1, 8, 64 and
             256 connections, keep-alive and a new connection per request: req/s, p50, p99
             (wrk --latency) and wrk's errors; 3 rounds of 5 s, medians
  sustained  60 s of new connections at 64 connections per path, as six 10-s wrk runs back to
             back on one topology: req/s and wrk errors per window, and the TIME_WAIT sockets
             (ss) in the gateway, the client and b, and the gateway's conntrack entries, at
             the end of each window
  datapath   req/s and p99 latency (wrk, 50 connections, netkit's server): the same four paths;
             keep-alive and a new connection per request; the client reuses its TIME_WAIT
             ports as in curves (Sandbox.reuse_client_time_wait: without it, HAProxy's
             new-connection figure over 8-s runs measured the client's ports filling up)
  switches   failed requests over 20 switches under new-connection load, handoff vs HAProxy
             reloaded with -sf (gantry's method), with long transfers in flight checked
             byte-exact
  ipv6       the same data path over IPv6 as over IPv4, through handoff and without NAT
             (the control): req/s per family, and the IPv6 / IPv4 ratio
  latency    whole-process `handoff switch` time with 1, 100 and 1,000 components, run inside
             the gateway namespace (no `ip netns exec` per run), `handoff --version` beside it
             as the floor; --binary PATH measures another build (a before/after)
  rollback   whole-process `handoff rollback` time, and the canary's measured share
  drain      lag from the last old flow closing to `drain --wait` returning, and the CPU the
             wait costs while conntrack holds 100,000 unrelated entries
  memory     peak RSS of `handoff update` on a real Docker container (needs dockerd)

--quick (a look in under 2 minutes, the figures noisier) shortens or skips, and says so in
the line it prints first and atop its tables (QUICK_NOTE below):
  curves     1 and 256 connections only (not 8 and 64), 1 round of 1 s (full: 3 rounds of 5 s)
  sustained  skipped
  datapath   1 round of 2 s (full: 3 rounds of 8 s)
  ipv6       1 round of 2 s (full: 3 rounds of 8 s)
  switches   20 switches 0.1 s apart (full: 0.3 s)
  latency    1 and 100 components only, 10 switches each (full: 1, 100 and 1,000, 40 each):
             the 1,000-component topology is laid out one switch per component, minutes
  rollback   10 rollbacks, 3-s canary loads (full: 40 and 5 s)
  drain      3 lag rounds and a 2-s CPU watch (full: 20 rounds and 20 s); still 100,000 entries
  memory     as in the full run

--json FILE writes every figure of the run (medians and per-round samples, the machine, the
date); --plot [PNG] draws the curves with gnuplot (from this run, or from an earlier run's
JSON with --from FILE, without measuring).
"""

import argparse
import ctypes
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
HANDOFF = os.path.join(BIN, "handoff")
NETKIT = os.path.join(BIN, "handoff-netkit")
GATEWAY, BRIDGE, A, B, CLIENT = "10.0.2.1", "10.0.1.1", "10.0.1.11", "10.0.1.12", "10.0.2.2"
GATEWAY6, BRIDGE6, B6 = "fd00:2::1", "fd00:1::1", "fd00:1::12"


def sh(*args, check=True, capture=True, input=None, timeout=600):
    result = subprocess.run(
        args, check=False, capture_output=capture, text=True, input=input, timeout=timeout
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result


def become_subreaper():
    """Orphans (nginx's workers once their master is killed, HAProxy's daemon) become this
    process's children rather than init's, so that Sandbox.close() can reap them: no zombie
    outlives the run."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def reap(pids):
    """Wait for the killed PIDS that are this process's children (bounded: 2 s in all), then
    for any adopted child that exited on its own (an HAProxy replaced by `-sf`). Every child
    this script started itself has been waited for by then, so none loses its exit status."""
    deadline = time.monotonic() + 2
    for pid in pids:
        while True:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] != 0 or time.monotonic() > deadline:
                    break
            except ChildProcessError:
                break  # not a child of ours, or already reaped
            time.sleep(0.005)
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == me:
            try:
                os.waitpid(int(entry), os.WNOHANG)
            except ChildProcessError:
                pass


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Sandbox:
    """client 10.0.2.2 -- gateway (10.0.2.1 | 10.0.1.1) -- bridge -- a 10.0.1.11, b 10.0.1.12"""

    counter = 0

    def __init__(self, config=None, ipv6=False):
        Sandbox.counter += 1
        self.ipv6 = ipv6
        prefix = f"hb{os.getpid()}x{Sandbox.counter}"
        self.gw, self.a, self.b, self.client = (f"{prefix}-{n}" for n in ("gw", "a", "b", "c"))
        self.dir = tempfile.mkdtemp(prefix="handoff-bench-")
        self.procs = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        self.config(config or web_config(1))

    def _build(self):
        for ns in (self.gw, self.a, self.b, self.client):
            sh("ip", "netns", "add", ns)
            if self.ipv6:
                # Links made from here on skip duplicate address detection: their link-local
                # addresses are usable at once rather than tentative for 1-2 s (add_ipv6).
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.gw, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.gw, "addr", "add", f"{BRIDGE}/24", "dev", "br0")
        sh("ip", "-n", self.gw, "link", "set", "br0", "up")
        for ns, host, port in ((self.a, A, "va"), (self.b, B, "vb")):
            sh("ip", "-n", self.gw, "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", ns)
            sh("ip", "-n", self.gw, "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{host}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", BRIDGE)
        sh("ip", "-n", self.gw, "link", "add", "vc", "type", "veth", "peer", "name", "eth0",
           "netns", self.client)
        sh("ip", "-n", self.gw, "addr", "add", f"{GATEWAY}/24", "dev", "vc")
        sh("ip", "-n", self.gw, "link", "set", "vc", "up")
        sh("ip", "-n", self.client, "addr", "add", f"{CLIENT}/24", "dev", "eth0")
        sh("ip", "-n", self.client, "link", "set", "eth0", "up")
        sh("ip", "-n", self.client, "route", "add", "default", "via", GATEWAY)
        sh("ip", "netns", "exec", self.gw, "sysctl", "-qw", "net.ipv4.ip_forward=1")

    def add_ipv6(self):
        """The same topology over IPv6 (fd00:1::/64 on the bridge, fd00:2::/64 to the client)."""
        for ns, address, dev in ((self.gw, f"{BRIDGE6}/64", "br0"), (self.gw, f"{GATEWAY6}/64", "vc"),
                                 (self.a, "fd00:1::11/64", "eth0"), (self.b, f"{B6}/64", "eth0"),
                                 (self.client, "fd00:2::2/64", "eth0")):
            sh("ip", "-n", ns, "addr", "add", address, "dev", dev, "nodad")
        for ns, via in ((self.a, BRIDGE6), (self.b, BRIDGE6), (self.client, GATEWAY6)):
            sh("ip", "-n", ns, "-6", "route", "add", "default", "via", via)
        sh("ip", "netns", "exec", self.gw, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        # Link-local addresses stay tentative for about a second after the links came up; until
        # then the gateway cannot resolve a neighbour and the first connections time out. (A
        # Sandbox(ipv6=True) made its links without duplicate address detection: no wait.)
        for _ in range(500):
            if not any(sh("ip", "-n", ns, "-6", "addr", "show", "tentative").stdout.strip()
                       for ns in (self.gw, self.a, self.b, self.client)):
                return
            time.sleep(0.02)
        raise RuntimeError("IPv6 addresses stayed tentative")

    def reuse_client_time_wait(self):
        """Let the client reuse its own TIME_WAIT ports (tcp_tw_reuse=1, as load generators
        run). Through HAProxy the client closes first (it has the whole answer before HAProxy
        relays nginx's FIN), so its TIME_WAIT sockets pile up; once they hold every even port
        of the range, each connect() scans it and the client, not the path, sets the rate
        (HAProxy, 64 connections, kernel defaults: 6,900 req/s in the first 3 s, under 300
        from 9 s on, wrk at 114 % CPU). The paths without a proxy leave TIME_WAIT on b."""
        sh("ip", "netns", "exec", self.client, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")

    def config(self, text):
        with open(os.path.join(self.dir, "handoff.json"), "w") as f:
            f.write(text)

    def serve(self, ns, name, listen="0.0.0.0:8080"):
        ready = os.path.join(self.dir, f"{name}.ready")
        self.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", ns, NETKIT, "serve", "--listen", listen, "--name", name,
             "--ready-file", ready], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(200):
            if os.path.exists(ready):
                return
            time.sleep(0.02)
        raise RuntimeError(f"server {name} did not start")

    def serve_nginx(self):
        """nginx in b on B:8080, the curves' backend: a child that close() kills (the master
        here, its workers with every other process in the namespace)."""
        conf = os.path.join(self.dir, "nginx.conf")
        log = os.path.join(self.dir, "nginx-error.log")
        with open(conf, "w") as f:
            f.write(NGINX_CONFIG.format(dir=self.dir, listen=f"{B}:8080"))
        # -p and -e keep nginx out of /var/log/nginx and /var/lib/nginx before it reads conf.
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.b, "nginx", "-p", self.dir + "/", "-e", log, "-c", conf,
             "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        # Ready once a real request over B:8080 is answered (bounded: 5 s).
        probe = sh("ip", "netns", "exec", self.b, sys.executable, "-c", PROBE, B, "8080",
                   check=False, timeout=30)
        if probe.returncode != 0 or proc.poll() is not None:
            errors = open(log).read().strip() if os.path.exists(log) else "(no error log)"
            raise RuntimeError(f"nginx did not answer on {B}:8080: {errors[-2000:]}")

    def handoff_args(self, *args):
        return ["ip", "netns", "exec", self.gw, HANDOFF, "--config",
                os.path.join(self.dir, "handoff.json"), "--state-dir",
                os.path.join(self.dir, "state"), *args]

    def handoff(self, *args, check=True):
        return sh(*self.handoff_args(*args), check=check)

    def netkit(self, ns, *args):
        return ["ip", "netns", "exec", ns, NETKIT, *args]

    def close(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()
        killed = []
        for ns in (self.client, self.a, self.b, self.gw):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
                except ProcessLookupError:
                    pass
            sh("ip", "netns", "del", ns, check=False)
        reap(killed)
        sh("rm", "-rf", self.dir, check=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# The curves' backend. Two workers (this machine's cores); 1,024 connections per worker, 4x the
# top concurrency (256) even if one worker takes them all; a keep-alive connection is never
# closed by nginx within a run (keepalive_requests, keepalive_timeout); no access log (a write
# per request would measure the disk); every path inside the sandbox's directory; workers as
# root, so that nothing outside that directory has to be readable by another user.
NGINX_CONFIG = """user root;
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{
  worker_connections 1024;
}}
http {{
  access_log off;
  default_type text/plain;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  client_body_temp_path {dir}/nginx-body;
  proxy_temp_path {dir}/nginx-proxy;
  fastcgi_temp_path {dir}/nginx-fastcgi;
  uwsgi_temp_path {dir}/nginx-uwsgi;
  scgi_temp_path {dir}/nginx-scgi;
  server {{
    listen {listen};
    location / {{
      return 200 "ok\\n";
    }}
  }}
}}
"""

# One GET / to HOST PORT, retried every 20 ms for up to 5 s; exit 0 once nginx answers "ok".
PROBE = """
import socket, sys, time
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.1\\r\\nHost: bench\\r\\nConnection: close\\r\\n\\r\\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        if data.startswith(b"HTTP/1.1 200") and data.endswith(b"\\r\\n\\r\\nok\\n"):
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.02)
sys.exit(1)
"""


def web_config(components, first_port=80):
    items = [
        {"name": "web" if i == 0 else f"c{i}",
         "ports": [{"external": first_port if i == 0 else 10000 + i, "container": 8080}],
         "readyTimeout": 5000, "drainTimeout": 600000}
        for i in range(components)
    ]
    return json.dumps({"components": items})


# HAProxy at its best documented settings for this job (configuration.txt of 2.6), kept in tcp
# mode since this is an L4 comparison; every section uses it, and `-sf` reloads it (switches).
#   nbthread 2            one thread per core of this machine (2.6's default follows the CPU
#                         affinity; said here so that the figure does not depend on how the
#                         bench was started)
#   maxconn 4096          >= 4x the curves' top concurrency (256); the frontends take the
#                         global value, and the backlog follows it
#   tcp-smart-accept      HTTP clients speak first: the kernel need not ACK the request
#                         alone, the response carries the ACK (automatic in http mode only)
#   tcp-smart-connect     the request leaves with the handshake's last ACK toward nginx
#                         (these two: no effect beyond the spread between rounds here)
#   no splice-auto        the manual's kernel splicing: with it on, HAProxy's `show info`
#                         counted 0 spliced bytes after keep-alive and new-connection runs
#                         (its heuristic splices streams that fill a buffer, never 3-byte
#                         answers), and req/s moved within the spread; so left off
#   no busy-polling       it spins a core; on 2 cores it would take wrk's or nginx's
HAPROXY_CONFIG = """global
  nbthread 2
  maxconn 4096
defaults
  mode tcp
  option tcp-smart-accept
  option tcp-smart-connect
  timeout connect 2s
  timeout client 60s
  timeout server 60s
frontend web
  bind {gateway}:80
  default_backend servers
backend servers
  server s1 {backend}:8080
"""


def start_haproxy(sandbox, backend, reload_pid=None):
    cfg = os.path.join(sandbox.dir, "haproxy.cfg")
    pidfile = os.path.join(sandbox.dir, "haproxy.pid")
    with open(cfg, "w") as f:
        f.write(HAPROXY_CONFIG.format(gateway=GATEWAY, backend=backend))
    args = ["ip", "netns", "exec", sandbox.gw, "haproxy", "-D", "-f", cfg, "-p", pidfile]
    if reload_pid:
        args += ["-sf", reload_pid]
    sh(*args)
    for _ in range(100):
        if os.path.exists(pidfile) and open(pidfile).read().strip():
            return open(pidfile).read().split()[0]
        time.sleep(0.02)
    raise RuntimeError("haproxy did not start")


def setup_path(sandbox, path):
    """Make 10.0.2.1:80 (or b's own address for no NAT) reach b's server; return the target."""
    if path == "no NAT":
        return f"{B}:8080"
    if path == "hand-written DNAT":
        sh("ip", "netns", "exec", sandbox.gw, "nft", "-f", "-", input=(
            "table ip bench {\n chain pre {\n type nat hook prerouting priority -100;\n"
            f" ip daddr {GATEWAY} tcp dport 80 dnat to {B}:8080\n }}\n}}\n"))
        return f"{GATEWAY}:80"
    if path == "handoff":
        sandbox.handoff("switch", "web", "--to", B)
        return f"{GATEWAY}:80"
    if path == "HAProxy":
        start_haproxy(sandbox, B)
        return f"{GATEWAY}:80"
    raise ValueError(path)


WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def wrk_run(sandbox, target, seconds, keepalive, connections=50, threads=2):
    """One wrk run from the client namespace: req/s, p50 and p99 in ms, errors, requests."""
    args = ["ip", "netns", "exec", sandbox.client, "wrk", f"-t{threads}", f"-c{connections}",
            f"-d{seconds}s", "--latency"]
    if not keepalive:
        args += ["-H", "Connection: close"]
    out = sh(*args, f"http://{target}/", timeout=seconds + 60).stdout

    def latency(percent):
        m = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
        return float(m.group(1)) * WRK_UNITS[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = (sum(int(x) for x in errors.groups()) if errors else 0) + (
        int(non2xx.group(1)) if non2xx else 0)
    return {"rps": rps, "p50_ms": latency(50), "p99_ms": latency(99), "errors": failed,
            "requests": requests}


def wrk(sandbox, target, seconds, keepalive):
    result = wrk_run(sandbox, target, seconds, keepalive)
    return result["rps"], result["p99_ms"], result["errors"]


def rotated(items, r):
    return items[r % len(items):] + items[:r % len(items)]


PATHS = ["no NAT", "hand-written DNAT", "handoff", "HAProxy"]
MODES = ["keep-alive", "new connection"]


def bench_curves(concurrencies, rounds, seconds):
    """wrk against nginx at each concurrency, each path on a fresh topology, path order
    rotating by round; medians of req/s, p50 and p99, wrk errors summed."""
    samples = {(p, m, c): [] for p in PATHS for m in MODES for c in concurrencies}
    for r in range(rounds):
        for mode in MODES:
            for c in concurrencies:
                for path in rotated(PATHS, r):
                    with Sandbox() as sandbox:
                        sandbox.reuse_client_time_wait()
                        sandbox.serve_nginx()
                        target = setup_path(sandbox, path)
                        result = wrk_run(sandbox, target, seconds, mode == "keep-alive",
                                         connections=c, threads=1 if c == 1 else 2)
                    samples[(path, mode, c)].append(result)
                    print(f"  round {r + 1} {mode:15} c={c:<4} {path:18} {result['rps']:10.0f}"
                          f" req/s  p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f}"
                          f" ms  errors {result['errors']}", file=sys.stderr)
    return [{"path": p, "mode": m, "concurrency": c,
             "rps": statistics.median(s["rps"] for s in runs),
             "p50_ms": statistics.median(s["p50_ms"] for s in runs),
             "p99_ms": statistics.median(s["p99_ms"] for s in runs),
             "errors": sum(s["errors"] for s in runs), "samples": runs}
            for (p, m, c), runs in samples.items()]


def bench_sustained(connections, windows, window_seconds):
    """New connections for windows x window_seconds per path on one topology, as back-to-back
    wrk runs; after each: TIME_WAIT sockets per namespace (those of the gateway toward b
    apart: HAProxy's own ports) and the gateway's conntrack entries. handoff and the
    hand-written rule hold no socket in the gateway, only conntrack entries."""
    out = {}
    for path in PATHS:
        with Sandbox() as sandbox:
            sandbox.reuse_client_time_wait()
            sandbox.serve_nginx()
            target = setup_path(sandbox, path)
            rows = []
            for w in range(windows):
                result = wrk_run(sandbox, target, window_seconds, False, connections=connections)
                sockets = {name: sh("ip", "netns", "exec", ns, "ss", "-Htan", "state",
                                    "time-wait").stdout.splitlines()
                           for name, ns in (("gw", sandbox.gw), ("client", sandbox.client),
                                            ("b", sandbox.b))}
                result["time_wait"] = {name: len(lines) for name, lines in sockets.items()}
                # The gateway's own connections toward nginx (HAProxy's), by their peer.
                result["time_wait_gw_to_b"] = sum(
                    1 for line in sockets["gw"] if line.split()[-1] == f"{B}:8080")
                count = sh("ip", "netns", "exec", sandbox.gw, "cat",
                           "/proc/sys/net/netfilter/nf_conntrack_count", check=False).stdout
                result["conntrack_gw"] = int(count) if count.strip() else 0
                rows.append(result)
                tw = result["time_wait"]
                print(f"  {path:18} {w * window_seconds:3}-{(w + 1) * window_seconds:<3} s "
                      f"{result['rps']:8.0f} req/s  errors {result['errors']}  TIME_WAIT gw "
                      f"{tw['gw']} ({result['time_wait_gw_to_b']} toward b) client "
                      f"{tw['client']} b {tw['b']}  conntrack gw {result['conntrack_gw']}",
                      file=sys.stderr)
            out[path] = rows
    return out


def bench_datapath(rounds, seconds):
    paths = ["no NAT", "hand-written DNAT", "handoff", "HAProxy"]
    results = {(p, m): [] for p in paths for m in ("keep-alive", "new connection")}
    for r in range(rounds):
        order = paths[r % len(paths):] + paths[:r % len(paths)]
        for mode in ("keep-alive", "new connection"):
            for path in order:
                with Sandbox() as sandbox:
                    sandbox.serve(sandbox.b, "b")
                    sandbox.reuse_client_time_wait()
                    target = setup_path(sandbox, path)
                    rps, p99, failed = wrk(sandbox, target, seconds, mode == "keep-alive")
                    results[(path, mode)].append((rps, p99, failed))
                    print(f"  round {r + 1} {mode:15} {path:18} {rps:10.0f} req/s  p99 "
                          f"{p99:7.2f} ms  errors {failed}", file=sys.stderr)
    table = {}
    for key, samples in results.items():
        table[key] = (statistics.median(s[0] for s in samples),
                      statistics.median(s[1] for s in samples), sum(s[2] for s in samples))
    return table


def bench_ipv6(rounds, seconds):
    """req/s of each family through handoff and without NAT (b serving both on [::]:8080).

    The ratio is taken within each round (the two families measured one after the other) and
    its median reported: this machine's req/s drift by 10-20 % between rounds, more than the
    difference being measured."""
    targets = {("handoff", "IPv4"): f"{GATEWAY}:80", ("handoff", "IPv6"): f"[{GATEWAY6}]:80",
               ("no NAT", "IPv4"): f"{B}:8080", ("no NAT", "IPv6"): f"[{B6}]:8080"}
    samples = {(path, family, mode): [] for (path, family) in targets
               for mode in ("keep-alive", "new connection")}
    keys = list(targets)
    for r in range(rounds):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for mode in ("keep-alive", "new connection"):
            for path, family in order:
                with Sandbox(ipv6=True) as sandbox:
                    sandbox.add_ipv6()
                    sandbox.serve(sandbox.b, "b", listen="[::]:8080")
                    sandbox.handoff("switch", "web", "--to", B)
                    sandbox.handoff("switch", "web", "--to", B6)
                    rps, _, failed = wrk(sandbox, targets[(path, family)], seconds,
                                         mode == "keep-alive")
                    if failed:
                        raise RuntimeError(f"{failed} wrk errors over {family} ({path}, {mode})")
                    samples[(path, family, mode)].append(rps)
                    print(f"  round {r + 1} {mode:15} {path:8} {family} {rps:10.0f} req/s",
                          file=sys.stderr)
    result = {}
    for path in ("handoff", "no NAT"):
        for mode in ("keep-alive", "new connection"):
            v4, v6 = samples[(path, "IPv4", mode)], samples[(path, "IPv6", mode)]
            result[(path, mode)] = (statistics.median(a / b for a, b in zip(v6, v4)),
                                    statistics.median(v4), statistics.median(v6))
    return result


def bench_switches(switches, pause):
    duration_ms = int((switches * pause + 2.5) * 1000)
    transfer_bytes = int(duration_ms / 1000 * 4_000_000)
    out = {}
    for method in ("handoff", "HAProxy -sf"):
        with Sandbox() as sandbox:
            sandbox.serve(sandbox.a, "a")
            sandbox.serve(sandbox.b, "b")
            if method == "handoff":
                sandbox.handoff("switch", "web", "--to", A)
            else:
                pid = start_haproxy(sandbox, A)
            load = subprocess.Popen(sandbox.netkit(
                sandbox.client, "load", "--target", f"{GATEWAY}:80", "--connections", "20",
                "--duration-ms", str(duration_ms)), stdout=subprocess.PIPE, text=True)
            transfers = [subprocess.Popen(sandbox.netkit(
                sandbox.client, "download", "--target", f"{GATEWAY}:80", "--bytes",
                str(transfer_bytes), "--rate", "5000000"), stdout=subprocess.PIPE, text=True)
                for _ in range(2)]
            time.sleep(0.5)
            for i in range(switches):
                to = B if i % 2 == 0 else A
                if method == "handoff":
                    sandbox.handoff("switch", "web", "--to", to)
                else:
                    pid = start_haproxy(sandbox, to, reload_pid=pid)
                time.sleep(pause)
            # netkit counts a request as failed when it errs, stalls past its 5-s timeouts or
            # misses the server's FIN within them.
            result = json.loads(load.communicate(timeout=120)[0].strip().splitlines()[-1])
            intact = 0
            for t in transfers:
                lines = t.communicate(timeout=120)[0].strip().splitlines()
                report = json.loads(lines[-1]) if lines else {}
                intact += 1 if report.get("intact") and report.get("bytes") == transfer_bytes else 0
            out[method] = (result["ok"], result["failed"], intact, len(transfers),
                           result["slowest_ms"])
            print(f"  {method:12} ok {result['ok']} failed {result['failed']} slowest "
                  f"{result['slowest_ms']} ms transfers intact {intact}/{len(transfers)}",
                  file=sys.stderr)
    return out


# Runs inside the gateway namespace, so that each figure is handoff's own process (exec to exit)
# and not `ip netns exec`'s set-up too (~3 ms here). `handoff --version` in the same loop is the
# floor: what starting the process at all costs on this machine.
SWITCH_LOOP = r"""
import json, re, subprocess, sys, time
handoff, base, targets, rounds = json.loads(sys.argv[1])
out = {"switch": [], "floor": [], "transaction": []}
for r in range(rounds):
    started = time.perf_counter()
    subprocess.run([handoff, "--version"], stdout=subprocess.DEVNULL, check=True)
    out["floor"].append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    done = subprocess.run([handoff, *base, targets[r % 2]], capture_output=True, text=True)
    out["switch"].append((time.perf_counter() - started) * 1000)
    if done.returncode != 0:
        sys.exit(done.stderr)
    found = re.search(r"switched in (\d+) ms", done.stdout)
    if not found:
        sys.exit("switch printed no transaction time: " + done.stdout)
    out["transaction"].append(int(found.group(1)))
print(json.dumps(out))
"""


def bench_latency(sizes, rounds):
    """Whole-process `handoff switch` time (the ready check included), p50 and p99, with the
    floor beside it."""
    out = {}
    for size in sizes:
        with Sandbox(web_config(size)) as sandbox:
            sandbox.serve(sandbox.a, "a")
            sandbox.serve(sandbox.b, "b")
            for i in range(1, size):
                sandbox.handoff("switch", f"c{i}", "--to", A)
            sandbox.handoff("switch", "web", "--to", A)
            base = sandbox.handoff_args("switch", "web", "--to")[5:]
            loop = json.loads(sh("ip", "netns", "exec", sandbox.gw, sys.executable, "-c",
                                 SWITCH_LOOP, json.dumps([HANDOFF, base, [B, A], rounds]),
                                 timeout=600).stdout)
            times, floor = loop["switch"], loop["floor"]
            out[size] = (pct(times, 50), pct(times, 99), pct(loop["transaction"], 50),
                         pct(floor, 50))
            print(f"  {size:5} components: p50 {out[size][0]:.1f} ms  p99 {out[size][1]:.1f} ms"
                  f"  (handoff --version {out[size][3]:.1f} ms)", file=sys.stderr)
    return out


FILL = """
import socket, sys
count = int(sys.argv[1])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count // 60000 + 1)]
for i in range(count):
    socks[i // 60000].sendto(b"x", ("%s", 1 + i %% 60000))
""" % A


def bench_rollback_and_canary(rounds, canary_ms):
    """Rollback time (whole process, ready check included), and the canary's measured share."""
    with Sandbox() as sandbox:
        sandbox.serve(sandbox.a, "a")
        sandbox.serve(sandbox.b, "b")
        sandbox.handoff("switch", "web", "--to", A)
        times = []
        for _ in range(rounds):
            sandbox.handoff("switch", "web", "--to", B)
            started = time.perf_counter()
            sandbox.handoff("rollback", "web")
            times.append((time.perf_counter() - started) * 1000)
        shares = {}
        for weight in (10, 50):
            sandbox.handoff("switch", "web", "--to", B, "--weight", str(weight))
            load = json.loads(sh(*sandbox.netkit(
                sandbox.client, "load", "--target", f"{GATEWAY}:80", "--connections", "8",
                "--duration-ms", str(canary_ms))).stdout.strip().splitlines()[-1])
            by = load["by_backend"]
            total = by.get("a", 0) + by.get("b", 0)
            shares[weight] = (by.get("b", 0) * 100 / max(total, 1), total, load["failed"])
            sandbox.handoff("rollback", "web")
        print(f"  rollback p50 {pct(times, 50):.1f} ms p99 {pct(times, 99):.1f} ms; canary "
              + ", ".join(f"{w} % -> {s:.2f} % of {n}" for w, (s, n, _) in shares.items()),
              file=sys.stderr)
        return pct(times, 50), pct(times, 99), shares


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_drain(entries, rounds, watch_seconds):
    with Sandbox() as sandbox:
        sandbox.serve(sandbox.a, "a")
        sandbox.serve(sandbox.b, "b")
        gw = ["ip", "netns", "exec", sandbox.gw]
        sh(*gw, "sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=900")
        sh(*gw, "sysctl", "-qw", f"net.netfilter.nf_conntrack_max={entries * 2 + 10000}")
        sh("ip", "netns", "exec", sandbox.a, "nft", "-f", "-", input=(
            "table inet sink {\n chain in {\n type filter hook input priority 0;\n"
            " meta l4proto udp drop\n }\n}\n"))
        # Conntrack only runs in a namespace once a rule needs it: route first, then fill.
        sandbox.handoff("switch", "web", "--to", A)
        sh("ip", "netns", "exec", sandbox.client, "python3", "-c", FILL, str(entries))
        count = int(sh(*gw, "cat", "/proc/sys/net/netfilter/nf_conntrack_count").stdout)
        lags = []
        for r in range(rounds):
            hold = subprocess.Popen(sandbox.netkit(
                sandbox.client, "hold", "--target", f"{GATEWAY}:80", "--ms", "400"),
                stdout=subprocess.PIPE, text=True)
            hold.stdout.readline()
            sandbox.handoff("switch", "web", "--to", B if r % 2 == 0 else A)
            drain = subprocess.Popen(sandbox.handoff_args("drain", "web", "--wait", "--timeout",
                                                          "60"),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if hold.wait() != 0:
                raise RuntimeError("the held connection did not survive the switch")
            closed = time.perf_counter()
            if drain.poll() is not None:
                raise RuntimeError("drain --wait returned before the last flow closed")
            if drain.wait() != 0:
                raise RuntimeError(f"drain --wait failed with {drain.returncode}")
            lags.append((time.perf_counter() - closed) * 1000)
        # CPU of a long wait: a flow held for watch_seconds while the table is full.
        hold = subprocess.Popen(sandbox.netkit(
            sandbox.client, "hold", "--target", f"{GATEWAY}:80", "--ms",
            str(int(watch_seconds * 1000) + 3000)), stdout=subprocess.PIPE, text=True)
        hold.stdout.readline()
        sandbox.handoff("switch", "web", "--to", B if rounds % 2 == 0 else A)
        # `ip netns exec` execs handoff in its own process: the pid is handoff's.
        drain = subprocess.Popen(sandbox.handoff_args("drain", "web", "--wait", "--timeout",
                                                      "120"),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # past the initial dump
        cpu0, t0 = cpu_seconds(drain.pid), time.perf_counter()
        time.sleep(watch_seconds)
        cpu1, t1 = cpu_seconds(drain.pid), time.perf_counter()
        if hold.wait() != 0 or drain.wait() != 0:
            raise RuntimeError("the long hold or its drain failed")
        cpu = (cpu1 - cpu0) / (t1 - t0) * 100
        print(f"  {count} conntrack entries: lag p50 {pct(lags, 50):.1f} ms p99 "
              f"{pct(lags, 99):.1f} ms, waiting costs {cpu:.2f} % of a core", file=sys.stderr)
        return count, pct(lags, 50), pct(lags, 99), cpu


def bench_memory():
    if sh("docker", "info", check=False).returncode != 0:
        return None
    tag = f"hbm{os.getpid()}"
    repo = f"127.0.0.1:1/handoff-bench-{tag}"
    work = tempfile.mkdtemp(prefix="handoff-bench-")
    env_bin = dict(os.environ, bin=BIN)
    try:
        for version in ("v1", "v2"):
            subprocess.run(["bash", "-c", f'source "{ROOT}/scripts/lib/sandbox.sh"; '
                                          f'build_netkit_image "{repo}:{version}" {version}'],
                           env=env_bin, check=True, timeout=120)
        config = os.path.join(work, "handoff.json")
        with open(config, "w") as f:
            json.dump({"components": [{
                "name": "web", "repo": repo, "tag": "v1", "pull": "never",
                "ports": [{"external": 18181, "container": 8080}],
                "readyChecks": [{"kind": "http", "port": 8080}], "stopTimeout": 2}]}, f)
        base = [HANDOFF, "--config", config, "--state-dir", os.path.join(work, "state"),
                "--table", tag]
        sh(*base, "start", "web")
        rss = os.path.join(work, "rss")
        sh("/usr/bin/time", "-f", "%M", "-o", rss, *base, "update", "web", "--tag", "v2")
        peak = int(open(rss).read().split()[-1])
        sh(*base, "kill", "web", check=False)
        return peak / 1024
    finally:
        sh("nft", "delete", "table", "inet", tag, check=False)
        for version in ("v1", "v2"):
            sh("docker", "rmi", "-f", f"{repo}:{version}", check=False)
        sh("rm", "-rf", work, check=False)


SECTIONS = ["curves", "sustained", "datapath", "ipv6", "switches", "latency", "rollback", "drain",
            "memory"]
FULL = {"curves": {"concurrencies": [1, 8, 64, 256], "rounds": 3, "seconds": 5},
        "sustained": {"connections": 64, "windows": 6, "window_seconds": 10},
        "datapath": {"rounds": 3, "seconds": 8},
        "ipv6": {"rounds": 3, "seconds": 8},
        "switches": {"switches": 20, "pause": 0.3},
        "latency": {"sizes": [1, 100, 1000], "rounds": 40},
        "rollback": {"rounds": 40, "canary_ms": 5000},
        "drain": {"entries": 100_000, "rounds": 20, "watch_seconds": 20},
        "memory": {}}
QUICK = {"curves": {"concurrencies": [1, 256], "rounds": 1, "seconds": 1},
         "sustained": None,
         "datapath": {"rounds": 1, "seconds": 2},
         "ipv6": {"rounds": 1, "seconds": 2},
         "switches": {"switches": 20, "pause": 0.1},
         "latency": {"sizes": [1, 100], "rounds": 10},
         "rollback": {"rounds": 10, "canary_ms": 3000},
         "drain": {"entries": 100_000, "rounds": 3, "watch_seconds": 2},
         "memory": {}}
QUICK_NOTE = ("--quick: curves at 1 and 256 connections only, 1 round of 1 s; sustained skipped; "
              "datapath and ipv6 1 round of 2 s; switches 0.1 s apart; switch latency at 1 and "
              "100 components only (no 1,000: laying it out takes minutes), 10 switches each; "
              "rollback 10 rounds, 3-s canary loads; drain 3 rounds and a 2-s CPU watch")


def machine():
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cores": os.cpu_count(), "kernel": os.uname().release, "cpu": model}


def run_section(name, settings):
    if name == "curves":
        return bench_curves(**settings)
    if name == "sustained":
        return bench_sustained(**settings)
    if name == "datapath":
        table = bench_datapath(**settings)
        return [{"path": p, "mode": m, "rps": v[0], "p99_ms": v[1], "errors": v[2]}
                for (p, m), v in table.items()]
    if name == "ipv6":
        table = bench_ipv6(**settings)
        return [{"path": p, "mode": m, "ratio": v[0], "ipv4_rps": v[1], "ipv6_rps": v[2]}
                for (p, m), v in table.items()]
    if name == "switches":
        return {method: dict(zip(("ok", "failed", "intact", "transfers", "slowest_ms"), v))
                for method, v in bench_switches(**settings).items()}
    if name == "latency":
        return [{"components": size, "p50_ms": v[0], "p99_ms": v[1], "transaction_ms": v[2],
                 "floor_ms": v[3]} for size, v in bench_latency(**settings).items()]
    if name == "rollback":
        p50, p99, shares = bench_rollback_and_canary(**settings)
        return {"p50_ms": p50, "p99_ms": p99,
                "canary": [{"weight": w, "share": s, "connections": n, "failed": f}
                           for w, (s, n, f) in shares.items()]}
    if name == "drain":
        count, lag50, lag99, cpu = bench_drain(**settings)
        return {"conntrack_entries": count, "lag_p50_ms": lag50, "lag_p99_ms": lag99,
                "cpu_percent": cpu}
    if name == "memory":
        return {"peak_rss_mb": bench_memory()}
    raise ValueError(name)


def print_curves(curves):
    by = {(r["path"], r["mode"], r["concurrency"]): r for r in curves}
    concurrencies = sorted({r["concurrency"] for r in curves})
    print("| path | connections | keep-alive req/s | p50 | p99 | new connection req/s | p50 | p99 "
          "| wrk errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in PATHS:
        for c in concurrencies:
            ka, nc = by[(path, "keep-alive", c)], by[(path, "new connection", c)]
            print(f"| {path} | {c} | {ka['rps']:.0f} | {ka['p50_ms']:.2f} ms | "
                  f"{ka['p99_ms']:.2f} ms | {nc['rps']:.0f} | {nc['p50_ms']:.2f} ms | "
                  f"{nc['p99_ms']:.2f} ms | {ka['errors'] + nc['errors']} |")
    print()


def print_sustained(sustained, settings):
    windows, seconds = settings["windows"], settings["window_seconds"]
    heads = [f"{w * seconds}-{(w + 1) * seconds} s" for w in range(windows)]
    print(f"Sustained: a new connection per request, {settings['connections']} connections, "
          f"{windows} wrk runs of {seconds} s back to back on one topology per path: req/s "
          "(wrk errors)\n")
    print("| path | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * windows)
    for path, rows in sustained.items():
        print(f"| {path} | " + " | ".join(f"{r['rps']:.0f} ({r['errors']})" for r in rows) + " |")
    print("\nTIME_WAIT sockets at the end of each window: gateway (of them toward b) / "
          "client / b; conntrack entries in the gateway\n")
    print("| path | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * windows)
    for path, rows in sustained.items():
        print(f"| {path} | " + " | ".join(
            f"{r['time_wait']['gw']} ({r['time_wait_gw_to_b']}) / {r['time_wait']['client']} / "
            f"{r['time_wait']['b']}; ct {r['conntrack_gw']}" for r in rows) + " |")
    print()


def print_datapath(datapath):
    by = {(r["path"], r["mode"]): r for r in datapath}
    print("| path | keep-alive req/s | p99 | new connection req/s | p99 | wrk errors |")
    print("|---|---|---|---|---|---|")
    for path in PATHS:
        ka, nc = by[(path, "keep-alive")], by[(path, "new connection")]
        print(f"| {path} | {ka['rps']:.0f} | {ka['p99_ms']:.2f} ms | {nc['rps']:.0f} | "
              f"{nc['p99_ms']:.2f} ms | {ka['errors'] + nc['errors']} |")
    print()


def target_rows(results):
    """(section, figure, measured, target, met) for every section that ran and has targets."""
    rows = []

    def row(section, figure, value, target, ok):
        rows.append({"section": section, "figure": figure, "measured": value, "target": target,
                     "met": bool(ok)})

    if "datapath" in results:
        by = {(r["path"], r["mode"]): r for r in results["datapath"]}
        for mode in MODES:
            ratio = by[("handoff", mode)]["rps"] / by[("hand-written DNAT", mode)]["rps"]
            row("datapath", f"handoff / hand-written DNAT, {mode}", f"{ratio:.2f}", ">= 0.97",
                ratio >= 0.97)
        for mode in MODES:
            ratio = by[("handoff", mode)]["rps"] / by[("HAProxy", mode)]["rps"]
            row("datapath", f"handoff / HAProxy, {mode}", f"{ratio:.2f}", ">= 1.5", ratio >= 1.5)
        errors = sum(by[(p, m)]["errors"] for p in ("hand-written DNAT", "handoff") for m in MODES)
        row("datapath", "wrk errors through handoff and the hand-written rule", str(errors), "0",
            errors == 0)
    if "ipv6" in results:
        by = {(r["path"], r["mode"]): r for r in results["ipv6"]}
        for mode in MODES:
            through, direct = by[("handoff", mode)], by[("no NAT", mode)]["ratio"]
            row("ipv6", f"IPv6 / IPv4 through handoff, {mode}",
                f"{through['ratio']:.2f} ({through['ipv6_rps']:.0f} / {through['ipv4_rps']:.0f} "
                f"req/s); without NAT {direct:.2f}", ">= 0.9 x the ratio without NAT",
                through["ratio"] >= 0.9 * direct)
    if "switches" in results:
        h, x = results["switches"]["handoff"], results["switches"]["HAProxy -sf"]
        row("switches", "failed requests over 20 switches (HAProxy -sf beside it)",
            f"{h['failed']} of {h['ok'] + h['failed']} (HAProxy: {x['failed']} of "
            f"{x['ok'] + x['failed']})", "0", h["failed"] == 0)
        row("switches", "slowest request across the switches",
            f"{h['slowest_ms']} ms (HAProxy: {x['slowest_ms']} ms)",
            "< 1,000 ms (no SYN sent twice)", h["slowest_ms"] < 1000)
        row("switches", "transfers across the switches intact",
            f"{h['intact']}/{h['transfers']} (HAProxy: {x['intact']}/{x['transfers']})", "all",
            h["intact"] == h["transfers"])
    if "latency" in results:
        by = {r["components"]: r for r in results["latency"]}
        for size, r in by.items():
            row("latency", f"switch p50 / p99, {size} component(s), whole process",
                f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms (transaction {r['transaction_ms']} ms;"
                f" `handoff --version` {r.get('floor_ms', 0):.1f} ms)", "p50 <= 5 ms",
                r["p50_ms"] <= 5)
        if 1 in by and 1000 in by:
            growth = by[1000]["p50_ms"] / by[1]["p50_ms"]
            row("latency", "switch p50, 1,000 vs 1 component", f"{growth:.2f}x", "<= 1.5x",
                growth <= 1.5)
    if "rollback" in results:
        r = results["rollback"]
        row("rollback", "rollback p50 / p99, 1 component (whole process)",
            f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms", "<= 30 ms", r["p50_ms"] <= 30)
        for c in r["canary"]:
            row("rollback", f"canary {c['weight']} %: share of new connections on it",
                f"{c['share']:.2f} % of {c['connections']} ({c['failed']} failed)",
                "within 2 points, >= 10,000, 0 failed",
                abs(c["share"] - c["weight"]) <= 2 and c["connections"] >= 10_000
                and c["failed"] == 0)
    if "drain" in results:
        d = results["drain"]
        count = d["conntrack_entries"]
        row("drain", f"drain lag p50 / p99 ({count} conntrack entries)",
            f"{d['lag_p50_ms']:.1f} / {d['lag_p99_ms']:.1f} ms", "p50 <= 100 ms",
            d["lag_p50_ms"] <= 100)
        row("drain", f"drain watch CPU ({count} conntrack entries)",
            f"{d['cpu_percent']:.2f} % of a core", "<= 5 %", d["cpu_percent"] <= 5)
    if "memory" in results:
        memory = results["memory"]["peak_rss_mb"]
        if memory is None:
            row("memory", "peak RSS during update", "not measured (no dockerd)", "<= 30 MB", False)
        else:
            row("memory", "peak RSS during update", f"{memory:.1f} MB", "<= 30 MB", memory <= 30)
    return rows


def gnuplot_terminal():
    listing = sh("gnuplot", input="set terminal\n")
    listing = listing.stdout + listing.stderr
    return "pngcairo" if re.search(r"^\s*pngcairo\s", listing, re.M) else "png"


def plot_curves(run, png):
    """Four panels (req/s and p99, keep-alive and new connection) against log-scale concurrency,
    one line per path; the title names the machine and the date of the measurement."""
    if not run.get("curves"):
        raise SystemExit("bench.py: no curves to plot (run the curves section, or --from a JSON "
                         "file that has them)")
    if not shutil.which("gnuplot"):
        raise SystemExit("bench.py: gnuplot is missing (scripts/bench.sh --plot installs it)")
    by = {(r["path"], r["mode"], r["concurrency"]): r for r in run["curves"]}
    concurrencies = sorted({r["concurrency"] for r in run["curves"]})
    work = tempfile.mkdtemp(prefix="handoff-plot-")
    try:
        files = {}
        for mode in MODES:
            for figure in ("rps", "p99_ms"):
                name = os.path.join(work, f"{mode.replace(' ', '-')}-{figure}.dat")
                with open(name, "w") as f:
                    f.write("connections " + " ".join(f'"{p}"' for p in PATHS) + "\n")
                    for c in concurrencies:
                        f.write(f"{c} " + " ".join(
                            f"{by[(p, mode, c)][figure]:.4f}" if (p, mode, c) in by else "NaN"
                            for p in PATHS) + "\n")
                files[(mode, figure)] = name
        m, settings = run["machine"], run.get("settings", {}).get("curves", {})
        title = (f"handoff bench curves: wrk -> nginx, {m['cores']} cores ({m['cpu']}), kernel "
                 f"{m['kernel']}, {run['date']}; medians of {settings.get('rounds', '?')} "
                 f"round(s) x {settings.get('seconds', '?')} s per point"
                 f"{' (--quick)' if run.get('quick') else ''}")
        terminal = gnuplot_terminal()
        font = 'font "DejaVu Sans,11"' if terminal == "pngcairo" else ""

        def q(text):
            return "'" + text.replace("'", "''") + "'"

        script = [f"set terminal {terminal} size 1400,1000 {font}", f"set output {q(png)}",
                  'set datafile missing "NaN"', "set key autotitle columnhead",
                  f"set multiplot layout 2,2 title {q(title)} noenhanced",
                  "set logscale x 2", "set xrange [0.7:360]",
                  "set xtics (" + ", ".join(f'"{c}" {c}' for c in concurrencies) + ")",
                  "set grid", "set key left top noenhanced",
                  "set xlabel 'concurrent connections (wrk -c)'"]
        for figure, label, log in (("rps", "req/s", False), ("p99_ms", "p99 latency (ms)", True)):
            script.append("set logscale y 10" if log else "unset logscale y")
            script.append("set yrange [*:*]" if log else "set yrange [0:*]")
            script.append(f"set ylabel {q(label)}")
            for mode in MODES:
                what = "throughput" if figure == "rps" else "p99 latency"
                script.append(f"set title {q(f'{what}, {mode}')} noenhanced")
                script.append(f"plot for [i=2:{len(PATHS) + 1}] {q(files[(mode, figure)])} "
                              "using 1:i with linespoints linewidth 2 pointtype 7 linetype i-1")
        script.append("unset multiplot")
        os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
        result = sh("gnuplot", input="\n".join(script) + "\n", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"gnuplot failed: {result.stderr.strip()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"bench.py: wrote {png}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description="handoff's benchmarks (see the module's doc)")
    parser.add_argument("--quick", action="store_true", help=QUICK_NOTE)
    parser.add_argument("--only", metavar="SECTION[,SECTION...]",
                        help="run only these sections: " + ", ".join(SECTIONS))
    parser.add_argument("--json", metavar="FILE", help="write every figure of the run to FILE")
    parser.add_argument("--plot", nargs="?", const="docs/bench-curves.png", metavar="PNG",
                        help="draw the curves (default PNG: docs/bench-curves.png); without "
                             "--only, runs only the curves section")
    parser.add_argument("--from", dest="source", metavar="FILE",
                        help="with --plot: take the curves from an earlier run's --json FILE "
                             "and measure nothing")
    parser.add_argument("--seconds", type=int, metavar="S",
                        help="development: seconds per wrk run in curves, datapath and ipv6, "
                             "and per sustained window")
    parser.add_argument("--rounds", type=int, metavar="N",
                        help="development: rounds in curves, datapath and ipv6")
    parser.add_argument("--concurrency", metavar="C[,C...]",
                        help="development: the curves' concurrencies")
    parser.add_argument("--binary", metavar="PATH",
                        help="the handoff binary to run (default target/release/handoff): an "
                             "earlier build, for a before/after")
    args = parser.parse_args()
    # handoff as its units run it: with RUST_BACKTRACE set (a developer's shell), anyhow
    # captures a backtrace for every error value, even those a switch handles as "not there".
    for variable in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE"):
        os.environ.pop(variable, None)
    if args.binary:
        global HANDOFF
        HANDOFF = os.path.abspath(args.binary)
    if args.source:
        if not args.plot:
            parser.error("--from goes with --plot")
        with open(args.source) as f:
            plot_curves(json.load(f), args.plot)
        return
    if args.only:
        only = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in only if s not in SECTIONS]
        if unknown:
            parser.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    else:
        only = ["curves"] if args.plot else SECTIONS
    quick = args.quick
    settings = {name: (dict(value) if value is not None else None)
                for name, value in (QUICK if quick else FULL).items()}
    for name in ("curves", "datapath", "ipv6"):
        if args.seconds:
            settings[name]["seconds"] = args.seconds
        if args.rounds:
            settings[name]["rounds"] = args.rounds
    if args.seconds and settings["sustained"]:
        settings["sustained"]["window_seconds"] = args.seconds
    if args.concurrency:
        settings["curves"]["concurrencies"] = [int(c) for c in args.concurrency.split(",")]
    if ("curves" in only or "sustained" in only) and not shutil.which("nginx"):
        raise SystemExit("bench.py: nginx is missing (scripts/bench.sh installs it)")

    become_subreaper()
    # A TERM (a timeout, a CI stop) unwinds like ^C: every open Sandbox is closed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    run = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(), "quick": quick,
           "sections": [], "settings": {}, "seconds": {}}
    if quick:
        print(QUICK_NOTE, file=sys.stderr)
    results = {}
    for name in SECTIONS:
        if name not in only:
            continue
        if settings[name] is None:
            print(f"{name}: skipped (--quick)", file=sys.stderr)
            continue
        print(name, file=sys.stderr)
        section_started = time.time()
        results[name] = run_section(name, settings[name])
        run["seconds"][name] = round(time.time() - section_started, 1)
        run["sections"].append(name)
        run["settings"][name] = settings[name]
        print(f"  ({name}: {run['seconds'][name]:.0f} s)", file=sys.stderr)
    run.update(results)
    run["total_seconds"] = round(time.time() - started, 1)

    m = run["machine"]
    print(f"\nhandoff bench{' --quick' if quick else ''}: {m['cores']} cores ({m['cpu']}), "
          f"kernel {m['kernel']}, {run['date']}, {run['total_seconds']:.0f} s; sections: "
          f"{', '.join(run['sections']) or 'none'}\n")
    if quick:
        print(QUICK_NOTE + "\n")
    if "curves" in results:
        s = run["settings"]["curves"]
        print(f"Curves: wrk against nginx, medians of {s['rounds']} round(s) of {s['seconds']} s "
              "(-t1 at 1 connection, -t2 above)\n")
        print_curves(results["curves"])
    if "sustained" in results:
        print_sustained(results["sustained"], run["settings"]["sustained"])
    if "datapath" in results:
        print_datapath(results["datapath"])
    rows = target_rows(results)
    run["targets"] = rows
    if rows:
        print("| figure | measured | target | met |")
        print("|---|---|---|---|")
        for r in rows:
            print(f"| {r['figure']} | {r['measured']} | {r['target']} | "
                  f"{'yes' if r['met'] else 'NO'} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(run, f, indent=1)
            f.write("\n")
        print(f"bench.py: wrote {args.json}", file=sys.stderr)
    if args.plot:
        plot_curves(run, args.plot)


if __name__ == "__main__":
    main()
