#!/usr/bin/env python3
"""handoff's benchmarks, run by scripts/bench.sh (which installs the tools and builds first).

Every compared path gets a fresh topology of network namespaces (a backend that still holds
TIME_WAIT sockets from an earlier run rejects reused client ports: PAWS), paths alternate
within each round, and figures are medians over rounds. Traffic only goes to addresses inside
the namespaces this script makes; every loop is bounded; everything is torn down on exit.

Sections:
  datapath   req/s and p99 latency (wrk): no NAT, a hand-written DNAT rule, handoff, HAProxy
             (tcp mode); keep-alive and a new connection per request
  switches   failed requests over 20 switches under new-connection load, handoff vs HAProxy
             reloaded with -sf (gantry's method), with long transfers in flight checked
             byte-exact
  ipv6       the same data path over IPv6 as over IPv4, through handoff and without NAT
             (the control): req/s per family, and the IPv6 / IPv4 ratio
  latency    whole-process `handoff switch` time with 1, 100 and 1,000 components
  drain      lag from the last old flow closing to `drain --wait` returning, and the CPU the
             wait costs while conntrack holds 100,000 unrelated entries
  memory     peak RSS of `handoff update` on a real Docker container (needs dockerd)
"""

import argparse
import json
import os
import re
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


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Sandbox:
    """client 10.0.2.2 -- gateway (10.0.2.1 | 10.0.1.1) -- bridge -- a 10.0.1.11, b 10.0.1.12"""

    counter = 0

    def __init__(self, config=None):
        Sandbox.counter += 1
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
        # then the gateway cannot resolve a neighbour and the first connections time out.
        for _ in range(500):
            if not any(sh("ip", "-n", ns, "-6", "addr", "show", "tentative").stdout.strip()
                       for ns in (self.gw, self.a, self.b, self.client)):
                return
            time.sleep(0.02)
        raise RuntimeError("IPv6 addresses stayed tentative")

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
        for ns in (self.client, self.a, self.b, self.gw):
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                sh("kill", "-9", pid, check=False)
            sh("ip", "netns", "del", ns, check=False)
        sh("rm", "-rf", self.dir, check=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def web_config(components, first_port=80):
    items = [
        {"name": "web" if i == 0 else f"c{i}",
         "ports": [{"external": first_port if i == 0 else 10000 + i, "container": 8080}],
         "readyTimeout": 5000, "drainTimeout": 600000}
        for i in range(components)
    ]
    return json.dumps({"components": items})


HAPROXY_CONFIG = """global
  maxconn 4000
defaults
  mode tcp
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


def wrk(sandbox, target, seconds, keepalive):
    args = ["ip", "netns", "exec", sandbox.client, "wrk", "-t2", "-c50", f"-d{seconds}s",
            "--latency"]
    if not keepalive:
        args += ["-H", "Connection: close"]
    out = sh(*args, f"http://{target}/", timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = (sum(int(x) for x in errors.groups()) if errors else 0) + (
        int(non2xx.group(1)) if non2xx else 0)
    return rps, float(p99.group(1)) * scale, failed


def bench_datapath(rounds, seconds):
    paths = ["no NAT", "hand-written DNAT", "handoff", "HAProxy"]
    results = {(p, m): [] for p in paths for m in ("keep-alive", "new connection")}
    for r in range(rounds):
        order = paths[r % len(paths):] + paths[:r % len(paths)]
        for mode in ("keep-alive", "new connection"):
            for path in order:
                with Sandbox() as sandbox:
                    sandbox.serve(sandbox.b, "b")
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
                with Sandbox() as sandbox:
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


def bench_latency(sizes, rounds):
    out = {}
    for size in sizes:
        with Sandbox(web_config(size)) as sandbox:
            sandbox.serve(sandbox.a, "a")
            sandbox.serve(sandbox.b, "b")
            for i in range(1, size):
                sandbox.handoff("switch", f"c{i}", "--to", A)
            sandbox.handoff("switch", "web", "--to", A)
            times, kernel = [], []
            for r in range(rounds):
                to = B if r % 2 == 0 else A
                started = time.perf_counter()
                result = sandbox.handoff("switch", "web", "--to", to)
                times.append((time.perf_counter() - started) * 1000)
                m = re.search(r"switched in (\d+) ms", result.stdout)
                if not m:
                    raise RuntimeError(f"switch printed no transaction time: {result.stdout!r}")
                kernel.append(int(m.group(1)))
            out[size] = (pct(times, 50), pct(times, 99), pct(kernel, 50))
            print(f"  {size:5} components: p50 {out[size][0]:.1f} ms  p99 {out[size][1]:.1f} ms",
                  file=sys.stderr)
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    quick = args.quick
    started = time.time()
    print("datapath", file=sys.stderr)
    datapath = bench_datapath(rounds=1 if quick else 3, seconds=3 if quick else 8)
    print("ipv6", file=sys.stderr)
    ipv6 = bench_ipv6(rounds=1 if quick else 3, seconds=3 if quick else 8)
    print("switches under load", file=sys.stderr)
    switches = bench_switches(switches=20, pause=0.15 if quick else 0.3)
    print("switch latency", file=sys.stderr)
    latency = bench_latency([1, 100, 1000], rounds=10 if quick else 40)
    print("rollback and canary", file=sys.stderr)
    rollback = bench_rollback_and_canary(rounds=10 if quick else 40,
                                         canary_ms=3000 if quick else 5000)
    print("drain", file=sys.stderr)
    drain = bench_drain(100_000, rounds=5 if quick else 20, watch_seconds=6 if quick else 20)
    print("memory", file=sys.stderr)
    memory = bench_memory()

    def row(figure, value, target, ok):
        print(f"| {figure} | {value} | {target} | {'yes' if ok else 'NO'} |")

    print(f"\nhandoff bench{' --quick' if quick else ''}: {os.cpu_count()} cores, "
          f"kernel {os.uname().release}, {time.time() - started:.0f} s\n")
    print("| path | keep-alive req/s | p99 | new connection req/s | p99 | wrk errors |")
    print("|---|---|---|---|---|---|")
    for path in ("no NAT", "hand-written DNAT", "handoff", "HAProxy"):
        ka, nc = datapath[(path, "keep-alive")], datapath[(path, "new connection")]
        print(f"| {path} | {ka[0]:.0f} | {ka[1]:.2f} ms | {nc[0]:.0f} | {nc[1]:.2f} ms "
              f"| {ka[2] + nc[2]} |")
    print()
    print("| figure | measured | target | met |")
    print("|---|---|---|---|")
    for mode in ("keep-alive", "new connection"):
        ratio = datapath[("handoff", mode)][0] / datapath[("hand-written DNAT", mode)][0]
        row(f"handoff / hand-written DNAT, {mode}", f"{ratio:.2f}", ">= 0.97", ratio >= 0.97)
    for mode in ("keep-alive", "new connection"):
        ratio = datapath[("handoff", mode)][0] / datapath[("HAProxy", mode)][0]
        row(f"handoff / HAProxy, {mode}", f"{ratio:.2f}", ">= 1.5", ratio >= 1.5)
    for mode in ("keep-alive", "new connection"):
        (through, v4, v6), direct = ipv6[("handoff", mode)], ipv6[("no NAT", mode)][0]
        row(f"IPv6 / IPv4 through handoff, {mode}",
            f"{through:.2f} ({v6:.0f} / {v4:.0f} req/s); without NAT {direct:.2f}",
            ">= 0.9 x the ratio without NAT", through >= 0.9 * direct)
    h, x = switches["handoff"], switches["HAProxy -sf"]
    row("failed requests over 20 switches (HAProxy -sf beside it)",
        f"{h[1]} of {h[0] + h[1]} (HAProxy: {x[1]} of {x[0] + x[1]})", "0", h[1] == 0)
    row("slowest request across the switches", f"{h[4]} ms (HAProxy: {x[4]} ms)",
        "< 1,000 ms (no SYN sent twice)", h[4] < 1000)
    errors = sum(datapath[(p, m)][2] for p in ("hand-written DNAT", "handoff")
                 for m in ("keep-alive", "new connection"))
    row("wrk errors through handoff and the hand-written rule", str(errors), "0", errors == 0)
    row("transfers across the switches intact", f"{h[2]}/{h[3]} (HAProxy: {x[2]}/{x[3]})",
        "all", h[2] == h[3])
    for size in (1, 100, 1000):
        p50, p99, kernel = latency[size]
        row(f"switch p50 / p99, {size} component(s)", f"{p50:.1f} / {p99:.1f} ms "
            f"(transaction {kernel} ms)", "<= 30 ms at 1,000" if size == 1000 else "",
            size != 1000 or p50 <= 30)
    growth = latency[1000][0] / latency[1][0]
    row("switch p50, 1,000 vs 1 component", f"{growth:.2f}x", "<= 1.5x", growth <= 1.5)
    p50, p99, shares = rollback
    row("rollback p50 / p99, 1 component (whole process)", f"{p50:.1f} / {p99:.1f} ms",
        "<= 30 ms", p50 <= 30)
    for weight, (share, total, failed) in shares.items():
        row(f"canary {weight} %: share of new connections on it", f"{share:.2f} % of {total} "
            f"({failed} failed)", "within 2 points, >= 10,000, 0 failed",
            abs(share - weight) <= 2 and total >= 10_000 and failed == 0)
    count, lag50, lag99, cpu = drain
    row(f"drain lag p50 / p99 ({count} conntrack entries)", f"{lag50:.1f} / {lag99:.1f} ms",
        "p50 <= 100 ms", lag50 <= 100)
    row(f"drain watch CPU ({count} conntrack entries)", f"{cpu:.2f} % of a core", "<= 5 %",
        cpu <= 5)
    if memory is None:
        row("peak RSS during update", "not measured (no dockerd)", "<= 30 MB", False)
    else:
        row("peak RSS during update", f"{memory:.1f} MB", "<= 30 MB", memory <= 30)


if __name__ == "__main__":
    main()
