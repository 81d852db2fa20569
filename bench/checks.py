#!/usr/bin/python3
"""TCP checks against ping checks, in the same run: N nodes, one check per node, timed
through `labctl verify`. Writes bench/RESULTS-checks.md. Needs root. See README.md.

Each node has one address (on lo) and checks itself. Ping: one echo request. TCP, two
ways: to a closed port (the kernel answers the SYN with a reset, `expect: unreachable`),
and to a port this script listens on in every node (one listening socket per namespace,
all held by this process; the kernel completes the handshakes): `expect: reachable`. Both take the path through the
node's own stack, so the host's neighbour table, which all namespaces share (1,024
entries by default), plays no part: what is measured is labctl's check machinery (a
socket per node, made inside its namespace; the event loop) for the two kinds. Lab names
start with "bn"; every lab is removed again, also on failure.
"""
import argparse
import ctypes
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


KINDS = ("ping", "tcp", "tcpopen")
LISTEN_PORT = 8080
LABEL = {"ping": "ping", "tcp": "TCP, closed port (reset)", "tcpopen": "TCP, handshake"}


def address_of(i):
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def topology(name, n, kind):
    nodes = {}
    checks = []
    for i in range(n):
        node = f"h{i}"
        nodes[node] = {"interfaces": {"lo": {"addresses": [address_of(i) + "/32"]}}}
        if kind == "tcp":
            checks.append({"from": node, "to": address_of(i), "port": 9, "expect": "unreachable"})
        elif kind == "tcpopen":
            checks.append({"from": node, "to": address_of(i), "port": LISTEN_PORT})
        else:
            checks.append({"from": node, "to": address_of(i), "count": 1})
    return {"name": name, "nodes": nodes, "checks": checks}


def listen_in_every_node(name, n):
    """A listening socket on LISTEN_PORT in each node's namespace, made by entering it
    (setns through libc; Python 3.11 has no os.setns) and coming back."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    sockets = []
    try:
        for i in range(n):
            fd = os.open(f"/run/netns/{name}-h{i}", os.O_RDONLY)
            try:
                if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), f"entering {name}-h{i}")
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind((address_of(i), LISTEN_PORT))
                s.listen(64)
                sockets.append(s)
            finally:
                os.close(fd)
    finally:
        libc.setns(home, 0x40000000)
        os.close(home)
    return sockets


def labctl(binary, *args, timeout=900):
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=int(os.environ.get("BENCH_CHECKS_N", "1000")))
    ap.add_argument("--reps", type=int, default=int(os.environ.get("BENCH_REPS", "3")))
    ap.add_argument("--labctl", default=os.environ.get("LABCTL", os.path.join(ROOT, "build", "labctl")))
    ap.add_argument("--out", default=os.environ.get("BENCH_CHECKS_OUT", os.path.join(HERE, "RESULTS-checks.md")))
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the benchmark needs root (namespaces)")
    times = {kind: [] for kind in KINDS}
    failures = []
    listeners = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in KINDS:
            name = f"bnchk{kind}{a.n}"[:16]
            path = os.path.join(tmp, f"{kind}.json")
            with open(path, "w") as f:
                json.dump(topology(name, a.n, kind), f)
            r = labctl(a.labctl, "up", path, "--no-verify")
            if r.returncode != 0:
                for k in KINDS:
                    labctl(a.labctl, "down", f"bnchk{k}{a.n}"[:16])
                raise SystemExit(f"up {name} failed: {r.stderr}")
            if kind == "tcpopen":
                listeners = listen_in_every_node(name, a.n)
        try:
            for rep in range(a.reps):
                # The order flips every repetition, so a drift of a shared machine cancels out.
                for kind in (KINDS if rep % 2 == 0 else KINDS[::-1]):
                    name = f"bnchk{kind}{a.n}"[:16]
                    start = time.monotonic()
                    r = labctl(a.labctl, "verify", name, "--json")
                    elapsed = time.monotonic() - start
                    out = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}
                    bad = [c for c in out.get("checks", []) if not c["ok"]]
                    if r.returncode != 0 or bad or len(out.get("checks", [])) != a.n:
                        failures.append(f"{kind} rep {rep}: exit {r.returncode}, {len(bad)} failed: "
                                        f"{(bad[:1] or r.stderr)}")
                    times[kind].append(elapsed)
                    print(f"{kind} rep {rep}: {elapsed:.3f} s", file=sys.stderr, flush=True)
        finally:
            for s in listeners:
                s.close()
            for kind in KINDS:
                labctl(a.labctl, "down", f"bnchk{kind}{a.n}"[:16])
    median = {kind: statistics.median(times[kind]) for kind in KINDS}
    lines = [
        "# TCP checks against ping checks",
        "",
        f"`bench/checks.py`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs, kernel {os.uname().release}.",
        "",
        f"A {a.n}-node lab, one check per node (see the script's docstring); the wall time of "
        f"`labctl verify LAB --json`, median of {a.reps} (order flipped every repetition).",
        "",
        "| checks | median s | / ping | all runs s |",
        "|---|---|---|---|",
    ]
    for kind in KINDS:
        lines.append(f"| {a.n} {LABEL[kind]} | {median[kind]:.3f} | {median[kind] / median['ping']:.2f} | "
                     f"{' '.join(f'{t:.3f}' for t in times[kind])} |")
    worst = max(median["tcp"], median["tcpopen"]) / median["ping"]
    lines += ["", f"TCP / ping, the slower TCP kind: **{worst:.2f}** (the goal: at most 2).", ""]
    if failures:
        lines += ["Failures:", ""] + [f"- {f}" for f in failures] + [""]
    with open(a.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
