#!/usr/bin/env python3
"""Why a request stalls during `handoff update` under steady new-connection load, arm by arm.

Run by scripts/update-stall-proof.sh (which builds and starts dockerd when none answers).

Set-up per arm, fresh each time: a Docker component serving busybox `httpd` (it closes first
after each response), readyChecks http, one external port; a client network namespace that
reaches this host over a veth; `handoff-netkit load` with 3 workers, a new connection per
request, 5-s timeouts (a request counts as ok only if the server's FIN arrives in time); a
capture of every conntrack entry of the client's flows that userspace deletes or expires, with
the program that asked (`handoff-netkit ct-requests`, in the host namespace, where the DNAT happens).
--port-range narrows the client's ephemeral ports, so that its tuples come back sooner.

Arms (each runs --updates updates, tags alternating, back to back):
  A  the load alone, no update, for as long as B took (control)
  B  updates, with handoff's conntrack clean-up at retirement turned off (the suspected cause
     left in place: dockerd deletes the stopped container's entries by their original tuple)
  C  updates as handoff runs them (the clean-up on)
  D  B with no client tuple ever reused (every connection binds its own address and port)

For every failed request the capture is searched for deletes of its client tuple around the
request, and every live entry that dockerd deleted is counted: that is the deletion that cuts
a new connection. Prints one Markdown table and writes the raw material
(load reports, captures, failure histories) to --out.
"""

import argparse
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
HANDOFF = os.path.join(BIN, "handoff")
NETKIT = os.path.join(BIN, "handoff-netkit")
SKIP_CLEANUP = "HANDOFF_UNSAFE_SKIP_CONNTRACK_CLEANUP"
# (arm, description, updates?, clean-up on?, unique client tuples?)
ARMS = {
    "A": ("load only, no update", False, True, False),
    "B": ("updates, clean-up off", True, False, False),
    "C": ("updates, clean-up on (handoff as shipped)", True, True, False),
    "D": ("updates, clean-up off, no tuple reuse", True, False, True),
}
UNIQUE_SOURCES = 64
LIVE_STATES = ("SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",
               "SYN_SENT2", "NONE", "UNKNOWN")


def sh(*args, check=True, env=None, timeout=300):
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


def build_image(repo, workdir):
    """busybox httpd serving its tag's name; imported, no registry."""
    for tag in ("v1", "v2"):
        root = os.path.join(workdir, f"rootfs-{tag}")
        os.makedirs(os.path.join(root, "bin"))
        os.makedirs(os.path.join(root, "www"))
        shutil.copy("/bin/busybox", os.path.join(root, "bin", "busybox"))
        with open(os.path.join(root, "www", "index.html"), "w") as page:
            page.write(tag)
        tarball = root + ".tar"
        sh("tar", "-C", root, "-cf", tarball, ".")
        # As PID 1, httpd would ignore SIGTERM and every stop would wait out its grace.
        cmd = ('["/bin/busybox", "sh", "-c", "trap \'exit 0\' TERM; '
               '/bin/busybox httpd -f -p 8080 -h /www & wait"]')
        sh("docker", "import", "-c", f"CMD {cmd}", tarball, f"{repo}:{tag}")


class Arm:
    def __init__(self, name, index, args, workdir):
        self.name, self.args = name, args
        self.description, self.updates, self.cleanup, self.unique = ARMS[name]
        tag = f"hsp{os.getpid() % 100000}{name.lower()}"
        self.table, self.client, self.host_if = tag, f"{tag}-c", f"{tag}h"
        self.subnet = 100 + index
        self.host = f"10.75.{self.subnet}.1"
        self.client_ip = f"10.75.{self.subnet}.2"
        self.port = 28000 + index
        self.dir = os.path.join(workdir, f"arm-{name}")
        os.makedirs(self.dir)
        self.procs = []

    # --- set-up and tear-down -------------------------------------------------------------
    def handoff(self, *args, check=True, cleanup=True):
        env = dict(os.environ)
        if not cleanup:
            env[SKIP_CLEANUP] = "1"
        return sh(HANDOFF, "--config", os.path.join(self.dir, "handoff.json"),
                  "--state-dir", os.path.join(self.dir, "state"), "--table", self.table,
                  *args, check=check, env=env)

    def up(self, repo):
        sh("ip", "netns", "add", self.client)
        sh("ip", "-n", self.client, "link", "set", "lo", "up")
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "eth0", "netns",
           self.client)
        sh("ip", "addr", "add", f"{self.host}/24", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        for n in range(UNIQUE_SOURCES if self.unique else 1):
            sh("ip", "-n", self.client, "addr", "add", f"10.75.{self.subnet}.{2 + n}/24",
               "dev", "eth0")
        sh("ip", "-n", self.client, "link", "set", "eth0", "up")
        sh("ip", "-n", self.client, "route", "add", "default", "via", self.host)
        if self.args.port_range:
            low, high = self.args.port_range.split("-")
            sh("ip", "netns", "exec", self.client, "sysctl", "-qw",
               f"net.ipv4.ip_local_port_range={low} {high}")
        config = {"components": [{
            "name": "web", "repo": repo, "tag": "v1", "pull": "never",
            "ports": [{"external": self.port, "container": 8080}],
            "readyChecks": [{"kind": "http", "port": 8080, "path": "/"}],
            "readyTimeout": 10000, "drainTimeout": 60000, "stopTimeout": 2,
        }]}
        path = os.path.join(self.dir, "handoff.json")
        with open(path, "w") as out:
            json.dump(config, out)
        os.chmod(path, 0o600)
        self.handoff("start", "web")

    def down(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.handoff("kill", "web", check=False)
        containers = sh("docker", "ps", "-aq", "--filter", f"label=handoff.table={self.table}",
                        check=False).stdout.split()
        if containers:
            sh("docker", "rm", "-f", *containers, check=False)
        sh("nft", "delete", "table", "inet", self.table, check=False)
        sh("ip", "netns", "del", self.client, check=False)
        sh("ip", "link", "del", self.host_if, check=False)

    # --- the run ----------------------------------------------------------------------------
    def run(self, duration_s):
        # Who deletes or expires which entry: netkit's capture receives only the events that a
        # userspace request caused (dockerd's clean-up, handoff's), so unlike `conntrack -E`
        # it loses none under load.
        capture_path = os.path.join(self.dir, "conntrack-requests.jsonl")
        ready = os.path.join(self.dir, "capture.ready")
        capture = subprocess.Popen(
            [NETKIT, "ct-requests", "--client-prefix", f"10.75.{self.subnet}.",
             "--ready-file", ready],
            stdout=open(capture_path, "w"), stderr=open(capture_path + ".err", "w"))
        self.procs.append(capture)
        for _ in range(100):
            if os.path.exists(ready):
                break
            time.sleep(0.05)
        time.sleep(0.5)
        load_cmd = ["ip", "netns", "exec", self.client, NETKIT, "load", "--target",
                    f"{self.host}:{self.port}", "--connections", str(self.args.workers),
                    "--duration-ms", str(3_600_000)]
        if self.unique:
            load_cmd += ["--unique-sources", ",".join(
                f"10.75.{self.subnet}.{2 + n}" for n in range(UNIQUE_SOURCES))]
        load = subprocess.Popen(load_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        self.procs.append(load)
        time.sleep(2)
        updates, started = [], time.time()
        if self.updates:
            for i in range(self.args.updates):
                tag = "v2" if i % 2 == 0 else "v1"
                t0 = time.time()
                result = self.handoff("update", "web", "--tag", tag, check=False,
                                      cleanup=self.cleanup)
                updates.append({"tag": tag, "rc": result.returncode, "start": t0,
                                 "seconds": round(time.time() - t0, 3),
                                 "stderr": result.stderr[-400:] if result.returncode else ""})
        else:
            time.sleep(duration_s)
        busy = time.time() - started
        time.sleep(3)
        load.send_signal(signal.SIGTERM)
        out, err = load.communicate(timeout=60)
        capture.send_signal(signal.SIGTERM)
        capture.wait(timeout=10)
        report = json.loads(out.strip().splitlines()[-1])
        with open(os.path.join(self.dir, "load.json"), "w") as f:
            json.dump(report, f, indent=1)
        with open(os.path.join(self.dir, "updates.json"), "w") as f:
            json.dump(updates, f, indent=1)
        events = parse_events(capture_path)
        return summarize(self, report, updates, events, busy)


def parse_events(path):
    with open(path) as capture:
        return [json.loads(line) for line in capture if line.strip()]


def summarize(arm, report, updates, events, busy):
    by_client = {}
    for e in events:
        by_client.setdefault(e["client"], []).append(e)
    dockerd = [e for e in events if e["program"] == "dockerd" and e["action"] == "deleted"]
    dockerd_live = [e for e in dockerd if e["state"] in LIVE_STATES]
    histories, attributed = [], 0
    for failure in report.get("failures", []):
        local = failure.get("local")
        start = failure["started_us"]
        window = [e for e in by_client.get(local, [])
                  if start - 10_000_000 <= e["at_us"] <= start + 7_000_000]
        cut_by_dockerd = any(e["program"] == "dockerd" and e["action"] == "deleted"
                             and e["state"] in LIVE_STATES and e["at_us"] >= start
                             for e in window)
        attributed += cut_by_dockerd
        histories.append({"failure": failure, "cut_by_dockerd": cut_by_dockerd,
                          "deletes": window})
    with open(os.path.join(arm.dir, "failure-histories.json"), "w") as f:
        json.dump(histories, f, indent=1)
    # A request that succeeded after a stall (a lost SYN is sent again after 1 s): was its
    # client tuple's previous entry deleted by someone at the moment it was reused?
    stalls, stalls_at_a_delete = [], 0
    for stall in report.get("stalls", []):
        start = stall["started_us"]
        near = [e for e in by_client.get(stall.get("local"), [])
                if start - 50_000 <= e["at_us"] <= start + 50_000]
        stalls_at_a_delete += bool(near)
        stalls.append({"stall": stall, "deletes_within_50ms": near})
    with open(os.path.join(arm.dir, "stall-histories.json"), "w") as f:
        json.dump(stalls, f, indent=1)
    with open(os.path.join(arm.dir, "dockerd-live-deletes.json"), "w") as f:
        json.dump(dockerd_live, f, indent=1)
    capture_warnings = open(os.path.join(arm.dir, "conntrack-requests.jsonl.err")).read()
    return {
        "arm": arm.name, "what": arm.description,
        "updates": len(updates), "updates_failed": sum(1 for u in updates if u["rc"] != 0),
        "seconds": round(busy, 1),
        "requests": report["ok"] + report["failed"], "failed": report["failed"],
        "slowest_ms": report["slowest_ms"],
        "tuples_reused": report["tuples"]["reused"],
        "reuse_gap": report["tuples"]["median_gap_connections"],
        "dockerd_deletes": len(dockerd), "dockerd_live_deletes": len(dockerd_live),
        "handoff_expired": sum(1 for e in events if e["action"] == "expired"),
        "failures_cut_by_dockerd": attributed,
        "stalls": len(report.get("stalls", [])), "stalls_at_a_delete": stalls_at_a_delete,
        "capture_overruns": capture_warnings.count("ENOBUFS"),
    }


# --- the reopen race (arms R0, RD, RX) ------------------------------------------------------
#
# The first fix deleted the retired backend's entries; arm C then showed a rare request that
# took 1 s instead of milliseconds: a SYN sent again. Suspected: the delete races with a SYN
# that reopens that very tuple (client port reused while its entry sits in TIME_WAIT). The
# kernel's TCP tracker, finding the entry killed under it, drops the SYN ("if (nf_ct_kill(ct))
# return -NF_REPEAT; return NF_DROP;"). These arms provoke it: a client reconnects from one
# fixed port, each time after the map was switched to the other backend, while a hammer asks
# ctnetlink, around the SYN, to delete (RD) or to expire (RX) the old backend's entry of that
# tuple, or does nothing (R0). A connect that takes over 0.5 s is a dropped SYN.

RACE_ARMS = {"R0": None, "RD": "delete", "RX": "expire"}
CLONE_NEWNET = 0x40000000


def setns(ns):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
    finally:
        os.close(fd)


def nla(kind, payload):
    import struct
    length = 4 + len(payload)
    return struct.pack("HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def ct_request(mode, backend, client, port):
    """ctnetlink: delete, or set timeout 0, of the entry whose reply is backend:8080 ->
    client:port (no ack asked: the hammer does not wait)."""
    import socket as so
    import struct
    nested = 0x8000
    ip = nla(1 | nested, nla(1, so.inet_aton(backend)) + nla(2, so.inet_aton(client)))
    proto = nla(2 | nested, nla(1, bytes([6])) + nla(2, struct.pack(">H", 8080))
                + nla(3, struct.pack(">H", port)))
    attributes = nla(2 | nested, ip + proto)
    kind = 2  # IPCTNL_MSG_CT_DELETE
    if mode == "expire":
        kind = 0  # IPCTNL_MSG_CT_NEW without NLM_F_CREATE: change an existing entry
        attributes += nla(7, struct.pack(">I", 0))
    body = struct.pack("BBH", 2, 0, 0) + attributes
    return struct.pack("IHHII", 16 + len(body), (1 << 8) | kind, 1, 0, 0) + body


def hammer_loop(gw, flag, target, mode):
    """In its own process on the other CPU: whenever `flag` is raised, send the request for
    the tuple in `target` as fast as possible until the flag is lowered."""
    import socket as so
    os.sched_setaffinity(0, {1})
    setns(gw)
    hammer = so.socket(so.AF_NETLINK, so.SOCK_RAW, 12)
    hammer.setblocking(False)
    while flag.value >= 0:
        if flag.value == 0:
            continue
        request = ct_request(mode, target.value.decode(), CLIENT_IP, RACE_PORT)
        while flag.value == 1:
            hammer.send(request)
            try:
                while hammer.recv(65536):
                    pass
            except BlockingIOError:
                pass


CLIENT_IP, RACE_PORT = "10.0.2.2", 47001


def conntrack_drops(ns):
    """The namespace's conntrack `drop` counter, summed over CPUs (`conntrack -S`)."""
    out = sh("ip", "netns", "exec", ns, "conntrack", "-S").stdout
    return sum(int(m) for m in re.findall(r"\bdrop=(\d+)", out))


def reopen_race(args, workdir):
    import multiprocessing
    import select
    import socket as so
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench
    rows = []
    for name, mode in RACE_ARMS.items():
        with bench.Sandbox(bench.web_config(1)) as box:
            box.serve(box.a, "a")
            box.serve(box.b, "b")
            box.handoff("switch", "web", "--to", bench.A)
            drops_before = conntrack_drops(box.gw)
            flag = multiprocessing.Value("i", 0, lock=False)
            target = multiprocessing.Array("c", 16, lock=False)
            hammer = None
            if mode:
                hammer = multiprocessing.Process(target=hammer_loop,
                                                 args=(box.gw, flag, target, mode))
                hammer.start()
            pid = os.fork()
            if pid == 0:
                # The client, in its own process pinned to the first CPU: the SYN passes the
                # gateway's conntrack inside its connect(), while the hammer runs beside it.
                status = 1
                try:
                    os.sched_setaffinity(0, {0})
                    setns(box.client)
                    stalls, slowest, done = 0, 0.0, 0
                    active, other = bench.A, bench.B
                    for _ in range(args.reopens):
                        sh(*box.handoff_args("switch", "web", "--to", other))
                        target.value = active.encode()
                        c = so.socket()
                        c.setsockopt(so.SOL_SOCKET, so.SO_REUSEADDR, 1)
                        c.bind((CLIENT_IP, RACE_PORT))
                        c.setblocking(False)
                        flag.value = 1
                        began = time.monotonic()
                        c.connect_ex((bench.GATEWAY, 80))
                        time.sleep(0.0005)
                        flag.value = 0
                        select.select([], [c], [], 5)
                        took = time.monotonic() - began
                        slowest = max(slowest, took)
                        stalls += took > 0.5
                        c.setblocking(True)
                        c.settimeout(5)
                        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        while c.recv(4096):
                            pass
                        c.close()
                        done += 1
                        time.sleep(0.005)
                        active, other = other, active
                    with open(os.path.join(workdir, f"race-{name}.json"), "w") as f:
                        json.dump({"reopens": done, "stalls": stalls,
                                   "slowest_ms": round(slowest * 1000)}, f)
                    status = 0
                finally:
                    os._exit(status)
            os.waitpid(pid, 0)
            flag.value = -1
            if hammer:
                hammer.join()
            with open(os.path.join(workdir, f"race-{name}.json")) as f:
                row = {"arm": name, "hammer": mode or "none", **json.load(f),
                       "conntrack_drops": conntrack_drops(box.gw) - drops_before}
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    with open(os.path.join(workdir, "reopen-race.json"), "w") as f:
        json.dump(rows, f, indent=1)
    lines = ["| arm | around each reopening SYN | reopens | connects over 0.5 s "
             "| packets conntrack dropped (`conntrack -S`) | slowest connect ms |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['hammer']} | {r['reopens']} | {r['stalls']} "
                     f"| {r['conntrack_drops']} | {r['slowest_ms']} |")
    return "\n".join(lines)


def table(rows):
    head = ("arm", "what", "updates (failed)", "s", "requests", "failed", "slowest ms",
            "tuples reused (median gap, conns)", "entries dockerd deleted (live ones)",
            "entries handoff expired", "failures cut by dockerd",
            "stalls > 0.5 s (at a delete of their tuple)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(x) for x in (
            r["arm"], r["what"], f"{r['updates']} ({r['updates_failed']})", r["seconds"],
            r["requests"], r["failed"], r["slowest_ms"],
            f"{r['tuples_reused']} ({r['reuse_gap']})",
            f"{r['dockerd_deletes']} ({r['dockerd_live_deletes']})", r["handoff_expired"],
            r["failures_cut_by_dockerd"], f"{r['stalls']} ({r['stalls_at_a_delete']})")) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--port-range", default=None, metavar="LOW-HIGH",
                        help="the client's ephemeral ports (default: the kernel's); a narrow "
                             "range brings a tuple back sooner")
    parser.add_argument("--arms", default="A,B,C,D")
    parser.add_argument("--out", default=None, help="keep the raw material here")
    parser.add_argument("--reopens", type=int, default=1000,
                        help="reopens per arm of the reopen race (R0, RD, RX); 0 skips it")
    args = parser.parse_args()
    names = [a.strip().upper() for a in args.arms.split(",") if a.strip()]
    workdir = args.out or tempfile.mkdtemp(prefix="handoff-stall-proof-")
    os.makedirs(workdir, exist_ok=True)
    if args.reopens:
        print(reopen_race(args, workdir) + "\n")
    for name in names:
        if name not in ARMS:
            sys.exit(f"unknown arm {name!r} (A, B, C, D)")
    if not names:
        return
    repo = f"handoff-stall-proof-{os.getpid()}"
    build_image(repo, workdir)
    rows, duration = [], 1.0 * args.updates
    try:
        for index, name in enumerate(names):
            arm = Arm(name, index, args, workdir)
            print(f"arm {name}: {arm.description} ...", file=sys.stderr, flush=True)
            try:
                arm.up(repo)
                row = arm.run(duration)
            finally:
                arm.down()
            if ARMS[name][1]:
                duration = row["seconds"]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        sh("docker", "rmi", "-f", f"{repo}:v1", f"{repo}:v2", check=False)
    print(table(rows))
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print(f"\nraw material: {workdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
