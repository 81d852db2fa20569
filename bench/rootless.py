#!/usr/bin/python3
"""Rootless labs against root mode (issue 18): `up --no-verify`, `verify` and `down` of the
same star topology, once as root and once as an unprivileged uid (setpriv, as the tests do),
in the same run, the order alternated per repetition. Writes bench/RESULTS-rootless.md.

Target: rootless within 1.5x of root mode for star 1000. Lab names start with "bnrl".
Needs root (to switch to the unprivileged uid and make its scratch directory).
Knobs: BENCH_ROOTLESS_N (default 1000; at most 1023, the bridge's port limit), BENCH_REPS
(default 1), LABCTL (the binary).
"""
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import topo as T  # noqa: E402
from quiet import wait_cpu_idle  # noqa: E402

ROOT = os.path.dirname(HERE)
UID = 65534
SETPRIV = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--inh-caps=-all"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def timed(argv, env):
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    return time.monotonic() - t0, r


def main():
    n = int(os.environ.get("BENCH_ROOTLESS_N") or 1000)
    reps = int(os.environ.get("BENCH_REPS") or 1)
    labctl = os.environ.get("LABCTL", os.path.join(ROOT, "build", "labctl"))
    out = os.environ.get("BENCH_ROOTLESS_OUT", os.path.join(HERE, "RESULTS-rootless.md"))
    if os.geteuid() != 0:
        sys.exit("bench/rootless.py: needs root (it runs labctl both as root and as uid %d)" % UID)

    work = tempfile.mkdtemp(prefix="bnrl-", dir="/tmp")
    os.chown(work, UID, UID)
    root_state = tempfile.mkdtemp(prefix="bnrl-root-", dir="/tmp")
    base = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8"}
    modes = {
        "root": ([labctl], dict(base, LABCTL_STATE_DIR=root_state)),
        "rootless": (SETPRIV + [labctl], dict(base, LABCTL_STATE_DIR=os.path.join(work, "state"), HOME=work)),
    }
    rows = []  # (mode, rep, phase, seconds, detail)
    notes = []
    try:
        t = T.star(n)
        for rep in range(reps):
            order = ["root", "rootless"] if rep % 2 == 0 else ["rootless", "root"]
            for mode in order:
                cmd, env = modes[mode]
                lab = "bnrl%s%d" % (mode[4:5] or "r", rep)  # bnrlr0 (root), bnrll0 (rootless)
                path = os.path.join(work, lab + ".json")
                T.write_json(path, T.labctl_json(t, lab))
                os.chown(path, UID, UID)
                wait_cpu_idle()
                try:
                    for phase, args in (("up", ["up", path, "--no-verify"]), ("verify", ["verify", lab, "--json"]),
                                        ("down", ["down", lab])):
                        dt, r = timed(cmd + args, env)
                        detail = ""
                        if phase == "verify":
                            try:
                                res = json.loads(r.stdout)
                                checks = res.get("checks", [])
                                detail = "%d/%d checks ok" % (sum(1 for c in checks if c.get("ok")), len(checks))
                            except ValueError:
                                detail = "no JSON"
                        if r.returncode not in (0, 1):
                            notes.append("%s %s failed (exit %d): %s"
                                         % (mode, phase, r.returncode, r.stderr.strip()[-300:]))
                            log(notes[-1])
                            break
                        rows.append((mode, rep, phase, dt, detail))
                        log("%-8s rep %d %-6s %.2f s %s" % (mode, rep, phase, dt, detail))
                finally:
                    subprocess.run(cmd + ["down", lab], capture_output=True, env=env)
    finally:
        subprocess.run(modes["rootless"][0] + ["down", "--all"], capture_output=True, env=modes["rootless"][1])
        shutil.rmtree(root_state, ignore_errors=True)
        # The keeper ends by itself once idle; its directory goes after it.
        pidfile = os.path.join(work, "state", ".keeper.pid")
        deadline = time.monotonic() + 20
        while os.path.exists(pidfile) and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(work, ignore_errors=True)

    def med(mode, phase):
        xs = [r[3] for r in rows if r[0] == mode and r[2] == phase]
        return statistics.median(xs) if xs else None

    lines = ["# Rootless labs against root mode (bench/rootless.py)", "",
             "%s, %s, kernel %s, %d CPUs; star N=%d (one switch, N hosts), %d repetition(s), "
             "order alternated per repetition; median seconds of the labctl command (wall clock)."
             % (datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), platform.node(),
                platform.release(), os.cpu_count(), n, reps), "",
             "| phase | root | rootless | rootless / root |", "|---|---|---|---|"]
    total = {"root": 0.0, "rootless": 0.0}
    for phase in ("up", "verify", "down"):
        a, b = med("root", phase), med("rootless", phase)
        if a is not None and b is not None:
            total["root"] += a
            total["rootless"] += b
            lines.append("| %s | %.2f | %.2f | %.2fx |" % (phase, a, b, b / a))
        else:
            lines.append("| %s | %s | %s | - |" % (phase, a, b))
    if total["root"]:
        lines.append("| **up + verify + down** | %.2f | %.2f | **%.2fx** (target <= 1.5x) |"
                     % (total["root"], total["rootless"], total["rootless"] / total["root"]))
    details = sorted({r[4] for r in rows if r[4]})
    if details:
        lines += ["", "verify: " + "; ".join(details)]
    if notes:
        lines += ["", "Notes:"] + ["- " + x for x in notes]
    lines += ["", "Rootless runs as uid %d via `%s`; its first command also starts the keeper "
              "(docs/rootless.md), which is inside the `up` time." % (UID, " ".join(SETPRIV))]
    text = "\n".join(lines) + "\n"
    with open(out, "w") as f:
        f.write(text)
    print(text)
    return 1 if notes else 0


if __name__ == "__main__":
    sys.exit(main())
