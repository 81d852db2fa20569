#!/usr/bin/python3
"""labctl benchmark: parametric topologies built by labctl and by the alternatives in the
same run, the tool order rotated per repetition (every tool in every position equally
often over a multiple of the tool count) to cancel machine drift. See README.md.

Every namespace a run makes is removed again, also on failure (labctl down, then
`ip netns del` of exactly the names this run made). Lab and namespace names start with
"bn". Needs root.
"""
import argparse
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
PY = "/usr/bin/python3"
TOOLS = ["labctl", "labctl1", "floor", "ipbatch", "ipscript", "pyroute2", "mininet"]
LETTER = {"labctl": "l", "labctl1": "s", "floor": "f", "ipbatch": "b", "ipscript": "i", "pyroute2": "p",
          "mininet": "m"}
# What each tool's lab is like when its `up` returns (the state the times buy).
END_STATE = {
    "labctl": "carrier up on every veth end (waited for); IPv6 DAD and router solicitations off",
    "labctl1": "as labctl; namespaces made on one thread (LABCTL_NETNS_THREADS=1)",
    "floor": "as labctl (the star: its two IPv6 sysctls; the campus: all of labctl's sysctls and the "
             "router's forwarding), same carrier wait, one thread; star and campus only",
    "ipbatch": "links set up, carrier not waited for; IPv6 defaults (DAD, router solicitations)",
    "ipscript": "links set up, carrier not waited for; IPv6 defaults (DAD, router solicitations)",
    "pyroute2": "links set up, carrier not waited for; IPv6 defaults (DAD, router solicitations)",
    "mininet": "Mininet's own (its hosts' shells running); IPv6 defaults",
}
ALL_PAIRS_MAX = 200
MAX_BRIDGE_PORTS = 1023
# Namespace prefixes are bn<tool letter><topology letter><N>: chain and campus both begin with c.
KIND_LETTER = {"star": "s", "chain": "c", "tree": "t", "campus": "m"}
# The campus (issue 20: 10,000 nodes) is run at its own sizes and, by default, by labctl,
# labctl on one thread and the floor only: a process per operation or per namespace,
# pyroute2 or a bash per node would take many minutes per repetition at 10,000 nodes.
CAMPUS_TOOLS = "labctl labctl1 floor"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def balanced_order(tools, rep):
    """The tool order of repetition REP: the list rotated by REP, so that over any
    len(tools) consecutive repetitions every tool runs in every position once."""
    k = rep % len(tools) if tools else 0
    return tools[k:] + tools[:k]


def run_timed(argv, env=None, timeout=900, capture=True):
    """Runs argv; returns (seconds, exit code, peak RSS in KiB of it and its waited-for
    children, stdout)."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env)
    out, err = b"", b""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()  # only the process we started
        out, err = p.communicate()
    # communicate() reaped it; the rusage of a reaped child is not available from
    # Popen, so run through wait4 ourselves when RSS matters (see run_rss).
    return time.monotonic() - t0, p.returncode, None, (out or b"").decode(), (err or b"").decode()


def run_rss(argv, timeout=900, env=None):
    """Like run_timed, plus the peak RSS (KiB) of argv and its children, read by GNU time
    (wait4's own number would include the RSS of our forked Python before exec)."""
    with tempfile.NamedTemporaryFile(mode="r") as rf:
        dt, rc, _, out, err = run_timed(["/usr/bin/time", "-q", "-f", "%M", "-o", rf.name] + argv,
                                        timeout=timeout, env=env)
        try:
            rss = int(rf.read().strip().splitlines()[-1])
        except (ValueError, IndexError):
            rss = None
        return dt, rc, rss, out, err


def netns_exists(name):
    return os.path.exists("/run/netns/" + name)


def remove_namespaces(names):
    """`ip netns del` of exactly these names, those that exist."""
    left = [n for n in names if netns_exists(n)]
    if not left:
        return 0
    subprocess.run(["ip", "-force", "-batch", "-"], input="".join("netns del %s\n" % n for n in left),
                   text=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return len(left)


def live_netns():
    """How many network namespaces the kernel holds, freed ones still being torn down
    included (the net_namespace slab), or None where /proc/slabinfo does not tell."""
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                if line.startswith("net_namespace "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


# From this size on, a tool's run waits for the previous lab's cleanup to end (settle).
BIG_LAB = 5000


def settle(baseline, timeout=180.0, quiet=3.0):
    """Waits until the kernel has freed the namespaces of the run before: it does that
    after `down` has returned, serially (cleanup_net) and on the same CPUs, so the next
    tool would otherwise pay for the previous one. Done when the count of live network
    namespaces is back within 5 of `baseline`, or has not fallen for `quiet` seconds
    (other users of the machine may hold some). Returns the seconds waited."""
    start = time.monotonic()
    last, last_change = live_netns(), start
    if last is None:
        return 0.0
    while time.monotonic() - start < timeout:
        if baseline is not None and last <= baseline + 5:
            break
        time.sleep(0.2)
        now_count = live_netns()
        if now_count is None:
            break
        if now_count < last:
            last, last_change = now_count, time.monotonic()
        elif time.monotonic() - last_change >= quiet:
            break
    return time.monotonic() - start


def neigh_limit():
    try:
        with open("/proc/sys/net/ipv4/neigh/default/gc_thresh3") as f:
            return int(f.read())
    except OSError:
        return 1024


def ensure_mininet(allow_install):
    """(available, reason). Installs Debian's mininet and bridge-utils only when absent."""
    def have():
        r = subprocess.run([PY, "-c", "import mininet.net"], capture_output=True)
        return r.returncode == 0 and shutil.which("brctl") is not None
    if have():
        return True, ""
    if not allow_install:
        return False, "Mininet not installed (the smoke run does not install it)"
    pk = [p for p in ("mininet", "bridge-utils")
          if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True)
          .stdout.strip() != "install ok installed"]
    log("installing", " ".join(pk))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + pk, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + pk, env=env,
                           capture_output=True, text=True)
    if have():
        return True, ""
    return False, "Mininet could not be installed: " + (r.stderr.strip().splitlines() or ["?"])[-1]


def build_floor(workdir):
    out = os.path.join(workdir, "floor")
    r = subprocess.run(["cc", "-O2", "-Wall", "-o", out, os.path.join(HERE, "floor.c"), "-lmnl"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("building bench/floor.c failed:\n" + r.stderr)
    return out


class Bench:
    def __init__(self, args):
        self.args = args
        self.labctl = args.labctl
        self.workdir = tempfile.mkdtemp(prefix="labctl-bench-")
        self.floor = build_floor(self.workdir)
        self.results = []  # dicts: topo, n, tool, rep, phase, seconds, rss_kb, ok...
        self.skips = []  # (what, why)
        self.notes = []
        self.made = set()  # every namespace name a run of this process may have made
        self.labs = set()
        self.netns_baseline = live_netns()
        self.settle_seconds = 0.0
        self.quiet_seconds = 0.0  # waited before downs (quiet.py)

    # --- one tool, one repetition ---------------------------------------------------------

    def before_down(self):
        """Waits for quiet CPUs (quiet.py); not in a smoke run, whose numbers are not read."""
        if not self.args.smoke:
            self.quiet_seconds += wait_cpu_idle()

    def record(self, t, tool, rep, phase, seconds, **extra):
        row = {"topo": t.kind, "n": t.n, "tool": tool, "rep": rep, "phase": phase, "seconds": seconds}
        row.update(extra)
        self.results.append(row)

    def skip(self, what, why):
        if (what, why) not in self.skips:
            self.skips.append((what, why))
            log("skip:", what, "-", why)

    def prefix(self, t, tool):
        return "bn%s%s%d" % (LETTER[tool], KIND_LETTER[t.kind], t.n)

    def run_tool(self, t, tool, rep):
        prefix = self.prefix(t, tool)
        names = T.ns_names(t, prefix)
        self.made.update(names)
        d = os.path.join(self.workdir, prefix)
        os.makedirs(d, exist_ok=True)
        try:
            getattr(self, "run_" + tool)(t, tool, rep, prefix, d)
        finally:
            if tool in ("labctl", "labctl1"):
                subprocess.run([self.labctl, "down", prefix], capture_output=True)
            n = remove_namespaces(names)
            if n:
                self.notes.append("%s %s N=%d rep %d: %d namespaces were left and removed by the harness"
                                  % (tool, t.kind, t.n, rep, n))

    def fail(self, t, tool, phase, rc, err):
        msg = "%s %s N=%d %s failed (exit %s): %s" % (tool, t.kind, t.n, phase, rc, err.strip()[-400:])
        log(msg)
        self.notes.append(msg)

    def run_labctl1(self, t, tool, rep, lab, d):
        """labctl with its namespaces made (and removed) on one thread, like the floor."""
        self.run_labctl(t, tool, rep, lab, d, env=dict(os.environ, LABCTL_NETNS_THREADS="1"))

    def run_labctl(self, t, tool, rep, lab, d, env=None):
        path = os.path.join(d, "topology.json")
        T.write_json(path, T.labctl_json(t, lab))
        self.labs.add(lab)
        dt, rc, rss, out, err = run_rss([self.labctl, "up", path, "--no-verify"], env=env)
        if rc != 0:
            return self.fail(t, tool, "up", rc, err)
        self.record(t, tool, rep, "up", dt, rss_kb=rss)
        if tool != "labctl":  # verify does not depend on how the namespaces were made
            self.before_down()
            dt, rc, _, out, err = run_timed([self.labctl, "down", lab], env=env)
            if rc != 0:
                return self.fail(t, tool, "down", rc, err)
            return self.record(t, tool, rep, "down", dt)
        dt, rc, _, out, err = run_timed([self.labctl, "verify", lab, "--json"])
        ok, total = self._count_ok(out)
        self.record(t, tool, rep, "verify", dt, ok=ok, checks=total, rc=rc)
        if t.n <= ALL_PAIRS_MAX:
            need = t.neighbour_entries_all_pairs()
            if need > neigh_limit() * 3 // 4:
                self.skip("labctl verify --all-pairs, %s N=%d" % (t.kind, t.n),
                          "needs about %d neighbour (ARP) entries at once; the host's "
                          "net.ipv4.neigh.default.gc_thresh3 is %d (shared by all namespaces); "
                          "raise it to measure this" % (need, neigh_limit()))
            else:
                dt, rc, _, out, err = run_timed([self.labctl, "verify", lab, "--all-pairs", "--json"])
                ok, total = self._count_ok(out)
                self.record(t, tool, rep, "all-pairs", dt, ok=ok, checks=total, rc=rc)
        self.run_operate(t, tool, rep, lab, path)
        self.before_down()
        dt, rc, _, out, err = run_timed([self.labctl, "down", lab])
        if rc != 0:
            return self.fail(t, tool, "down", rc, err)
        self.record(t, tool, rep, "down", dt)

    def run_operate(self, t, tool, rep, lab, path):
        """Operating the running lab (docs/operate.md): apply of the same file (no changes),
        apply adding one node, and pulling / plugging back one cable. RESULTS.md gives each
        as a fraction of the same repetition's `up`."""
        phases = [("apply-noop", [self.labctl, "apply", path, "--no-verify"])]
        doc = json.load(open(path))
        first = next(iter(doc["nodes"]))
        grown = json.loads(json.dumps(doc))
        grown["nodes"]["xnew"] = {"interfaces": {"eth0": {"addresses": ["10.254.254.2/30"]}}}
        grown["links"].append({"endpoints": ["xnew:eth0", first + ":xnew0"]})
        path2 = path.replace(".json", ".grown.json")
        T.write_json(path2, grown)
        phases.append(("apply-add-node", [self.labctl, "apply", path2, "--no-verify"]))
        end = doc["links"][0]["endpoints"][1] if doc["links"] else None
        if end:
            phases += [("link-down", [self.labctl, "link", lab, end, "down"]),
                       ("link-up", [self.labctl, "link", lab, end, "up"])]
        for phase, argv in phases:
            # As before `down`: right after a large `up` (or the add of a node) the kernel is
            # still busy with the lab's IPv6 multicast; each operation is timed on quiet CPUs.
            self.before_down()
            dt, rc, _, out, err = run_timed(argv)
            if rc != 0:
                return self.fail(t, tool, phase, rc, err)
            self.record(t, tool, rep, phase, dt)

    @staticmethod
    def _count_ok(out):
        try:
            doc = json.loads(out)
        except ValueError:
            return None, None
        items = doc.get("checks", doc) if isinstance(doc, dict) else doc
        items = [c for c in items if isinstance(c, dict)]
        return sum(1 for c in items if c.get("ok")), len(items)

    def run_floor(self, t, tool, rep, prefix, d):
        if t.kind not in ("star", "campus"):
            return
        mode = "-campus" if t.kind == "campus" else ""  # the campus: topo.py's 500 ports a switch
        dt, rc, rss, out, err = run_rss([self.floor, "up" + mode, prefix, str(t.n)])
        if rc != 0:
            return self.fail(t, tool, "up", rc, err)
        self.record(t, tool, rep, "up", dt, rss_kb=rss)
        self.before_down()
        dt, rc, _, out, err = run_timed([self.floor, "down" + mode, prefix, str(t.n)])
        if rc != 0:
            return self.fail(t, tool, "down", rc, err)
        self.record(t, tool, rep, "down", dt)

    def _scripts(self, t, tool, rep, d, up, down, verify=None):
        for name, text in (("up.sh", up), ("down.sh", down), ("verify.sh", verify)):
            if text:
                with open(os.path.join(d, name), "w") as f:
                    f.write(text)
        dt, rc, rss, out, err = run_rss(["/bin/sh", os.path.join(d, "up.sh")])
        if rc != 0:
            return self.fail(t, tool, "up", rc, err)
        self.record(t, tool, rep, "up", dt, rss_kb=rss)
        if verify:
            dt, rc, _, out, err = run_timed(["/bin/sh", os.path.join(d, "verify.sh")])
            self.record(t, tool, rep, "verify", dt, rc=rc)
        self.before_down()
        dt, rc, _, out, err = run_timed(["/bin/sh", os.path.join(d, "down.sh")])
        if rc != 0:
            return self.fail(t, tool, "down", rc, err)
        self.record(t, tool, rep, "down", dt)

    def run_ipscript(self, t, tool, rep, prefix, d):
        up, down = T.ip_script(t, prefix)
        self._scripts(t, tool, rep, d, up, down, T.ip_verify_script(t, prefix))

    def run_ipbatch(self, t, tool, rep, prefix, d):
        up, down = T.ip_batch(t, prefix, d)
        self._scripts(t, tool, rep, d, up, down)

    def run_pyroute2(self, t, tool, rep, prefix, d):
        spec = os.path.join(d, "spec.json")
        T.write_json(spec, T.plain(t, prefix))
        script = os.path.join(HERE, "alt_pyroute2.py")
        dt, rc, rss, out, err = run_rss([PY, script, spec, "up"])
        if rc != 0:
            return self.fail(t, tool, "up", rc, err)
        self.record(t, tool, rep, "up", dt, rss_kb=rss)
        self.before_down()
        dt, rc, _, out, err = run_timed([PY, script, spec, "down"])
        if rc != 0:
            return self.fail(t, tool, "down", rc, err)
        self.record(t, tool, rep, "down", dt)

    def run_mininet(self, t, tool, rep, prefix, d):
        if t.kind == "tree":
            return
        if t.n > self.args.mininet_max:
            return self.skip("mininet %s N=%d" % (t.kind, t.n),
                             "above BENCH_MININET_MAX=%d (a bash per node; bounded run time)" % self.args.mininet_max)
        spec = os.path.join(d, "spec.json")
        T.write_json(spec, T.plain(t, "bm"))
        dt, rc, rss, out, err = run_rss([PY, os.path.join(HERE, "alt_mininet.py"), spec], timeout=1800)
        if rc != 0:
            return self.fail(t, tool, "run", rc, err)
        r = json.loads(out.strip().splitlines()[-1])
        self.quiet_seconds += r.get("quiet_wait", 0.0)
        self.record(t, tool, rep, "up", r["up"], rss_kb=rss)
        if "verify" in r:
            self.record(t, tool, rep, "verify", r["verify"], ok=r["checks_ok"], checks=r["checks"])
        self.record(t, tool, rep, "down", r["down"])

    # --- the whole run ----------------------------------------------------------------------

    def run(self):
        a = self.args
        tools = [x for x in a.tools if x in TOOLS]
        if "mininet" in tools:
            ok, why = ensure_mininet(not a.smoke)
            if not ok:
                tools.remove("mininet")
                self.skip("mininet", why)
        try:
            for kind in a.topos:
                kind_tools = tools
                if kind == "campus":
                    kind_tools = [x for x in tools if x in a.campus_tools]
                    left_out = [x for x in tools if x not in kind_tools]
                    if left_out:
                        self.skip("campus: " + ", ".join(left_out),
                                  "not in BENCH_CAMPUS_TOOLS (default '%s'; a process per operation or per "
                                  "namespace, pyroute2 or a bash per node make 10,000 nodes take many minutes "
                                  "per repetition)" % CAMPUS_TOOLS)
                for n in (a.campus_n if kind == "campus" else a.n):
                    if n > 1000 and kind == "chain":
                        continue
                    if kind == "star" and n > MAX_BRIDGE_PORTS:
                        self.skip("star N=%d" % n, "a Linux bridge takes at most %d ports (BR_MAX_PORTS 1024, "
                                  "port 0 reserved): every tool fails with EXFULL at port 1024; see the tree "
                                  "topology for labs of more hosts" % MAX_BRIDGE_PORTS)
                        continue
                    t = T.GENERATORS[kind](n)
                    for rep in range(reps_of(a, kind)):
                        for tool in balanced_order(kind_tools, rep):
                            if not a.smoke:
                                self.settle_seconds += settle(self.netns_baseline)
                                if n >= BIG_LAB:
                                    # The kernel frees thousands of namespaces for minutes
                                    # (cleanup_net walks every live namespace per freed one),
                                    # in batches between which the count stands still: also
                                    # wait for CPUs that stay idle (observations.md).
                                    self.settle_seconds += wait_cpu_idle(min_idle=0.9, window=3.0, timeout=900.0)
                            log("%s N=%d rep %d: %s" % (kind, n, rep + 1, tool))
                            self.run_tool(t, tool, rep)
        finally:
            for lab in self.labs:
                subprocess.run([self.labctl, "down", lab], capture_output=True)
            left = remove_namespaces(sorted(self.made))
            if left:
                log("removed %d leftover namespaces" % left)
            shutil.rmtree(self.workdir, ignore_errors=True)


def reps_of(a, kind):
    """Repetitions of a topology: BENCH_REPS if given, else the number of tools that run it
    (every tool in every position once)."""
    if a.reps > 0:
        return a.reps
    return len(a.campus_tools) if kind == "campus" else len(a.tools)


# --- report -----------------------------------------------------------------------------

def fmt(x):
    if x is None:
        return "-"
    if x >= 100:
        return "%.0f" % x
    if x >= 10:
        return "%.1f" % x
    if x >= 1:
        return "%.2f" % x
    return "%.3f" % x


def mmm(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return "%s / %s / %s" % (fmt(min(xs)), fmt(statistics.median(xs)), fmt(max(xs)))


def git_commit():
    """The repository's commit (with -dirty when the work tree differs), or '?'."""
    r = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty", "--abbrev=7"],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "?"


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": cpu,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git_commit(),
            "loadavg": open("/proc/loadavg").read().split()[:3],
            "gc_thresh3": neigh_limit()}


def run_shape(a):
    """What ran: per group of topologies, the sizes, repetitions and tools, and whether
    the rotation was balanced."""
    groups = []
    plain = [k for k in a.topos if k != "campus"]
    campus_tools = [x for x in a.tools if x in a.campus_tools]
    for kinds, sizes, tools in ((plain, a.n, a.tools), (["campus"] if "campus" in a.topos else [], a.campus_n,
                                                        campus_tools)):
        if not kinds or not sizes:
            continue
        reps = reps_of(a, kinds[0])
        groups.append("%s: N = %s, %d repetitions of %d tools, the tool order rotated by one every repetition "
                      "(%s)" % (" ".join(kinds), " ".join(map(str, sizes)), reps, len(tools),
                                "every tool in every position equally often" if reps % max(1, len(tools)) == 0
                                else "NOT balanced: the repetitions are not a multiple of the tool count"))
    return groups


def campus_report(rows, a):
    """The campus at each size (issue 20): each tool's times, its ratio to the floor's and
    its cost per node, and how that cost grows from the smallest size."""
    sizes = sorted({r["n"] for r in rows if r["topo"] == "campus"})
    if not sizes:
        return []

    def times(n, tool, phase):
        return {r["rep"]: r["seconds"] for r in rows
                if r["topo"] == "campus" and r["n"] == n and r["tool"] == tool and r["phase"] == phase}

    def med(d):
        return statistics.median(d.values()) if d else None

    def ratio(x, y):
        return [x[r] / y[r] for r in x if r in y and y[r] > 0]

    out = ["## Campus: labctl and the floor by size (issue 20)", "",
           "Hosts on switches of 500 ports behind one core router (`bench/topo.py` campus; nodes = hosts + "
           "switches + 1), 100 sampled checks (labctl's verify). Targets (issue 20): labctl's `up` of 10,000 "
           "nodes in under 30 s; its cost per node at 10,000 within 1.5x of that at 1,000. Times are "
           "medians over repetitions (s); ÷ floor is the tool's time over the floor's, per repetition, "
           "min / median / max; ms per node is the median `up` over the nodes, and in brackets over the same "
           "tool's at N = %d." % sizes[0], "",
           "| N | nodes | tool | up | verify | down | ÷ floor: up | ÷ floor: down | up, ms per node |",
           "|---|---|---|---|---|---|---|---|---|"]
    base = {}
    for n in sizes:
        nodes = len(T.GENERATORS["campus"](n).nodes)
        fu, fd = times(n, "floor", "up"), times(n, "floor", "down")
        for tool in TOOLS:
            up, down = times(n, tool, "up"), times(n, tool, "down")
            if not up and not down:
                continue
            per = "-"
            if up:
                ms = med(up) * 1000 / nodes
                base.setdefault(tool, ms)
                per = "%.2f (%.2fx)" % (ms, ms / base[tool])
            alt = tool != "floor"
            out.append("| %d | %d | %s | %s | %s | %s | %s | %s | %s |" % (
                n, nodes, tool, fmt(med(up)), fmt(med(times(n, tool, "verify"))), fmt(med(down)),
                mmm(ratio(up, fu)) if alt else "-", mmm(ratio(down, fd)) if alt else "-", per))
    out.append("")
    return out


def report(bench, m_start, m_end, elapsed):
    rows = bench.results
    a = bench.args

    def sel(**kw):
        return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]

    def by_rep(**kw):
        return {r["rep"]: r["seconds"] for r in sel(**kw)}

    out = ["# labctl benchmark results", "",
           "Generated by `make bench` (`bench/run.py`); do not edit by hand.", "",
           "Machine: %d CPUs (%s), kernel %s, %s; load average %s at start, %s at end "
           "(other engineers' tests share this machine). %s. labctl at commit %s. "
           "Run took %.0f s." % (
               m_start["nproc"], m_start["cpu"], m_start["kernel"], m_start["date"],
               " ".join(m_start["loadavg"]), " ".join(m_end["loadavg"]),
               "; ".join(run_shape(a)), m_start.get("commit", "?"), elapsed), ""]
    out += ["Times are wall seconds as min / median / max over repetitions. Ratios are "
            "labctl ÷ alternative, computed per repetition (same rep, adjacent in time), then "
            "min / median / max: below 1 means labctl is faster. Before each tool the harness "
            "waits until the kernel has freed the namespaces of the run before (the "
            "`net_namespace` count in /proc/slabinfo back at its level from the start, or "
            "steady for 3 s; from N = %d on also until the CPUs are 90%% idle over 3 s, at most "
            "15 min: the kernel frees a big lab's namespaces for minutes): %.0f s of waiting "
            "in all. Before each tool's `down` (and each of "
            "labctl's operations on the running lab) it waits until the CPUs are at least 60%% "
            "idle over half a second (at most 20 s; "
            "`bench/quiet.py`: right after a large `up` the kernel is still busy with the "
            "lab's IPv6 multicast, whatever tool made it): %.0f s in all." % (
                BIG_LAB, bench.settle_seconds, bench.quiet_seconds), "",
            "- **floor**: `bench/floor.c`, only the kernel work of a star or a campus (libmnl, ~20 syscalls "
            "per node), one thread.",
            "- **labctl1**: labctl with its namespaces made and removed on one thread "
            "(`LABCTL_NETNS_THREADS=1`), the floor's way; labctl uses up to one thread per CPU (at most 4).",
            "- **ipbatch**: one `ip -batch` in the root namespace (namespaces, veths born in both "
            "namespaces, sysctls via `netns exec`) + one `ip -n NS -batch` per namespace.",
            "- **ipscript**: a shell script, one `ip` process per operation.",
            "- **pyroute2**: python3-pyroute2 in one process (`bench/alt_pyroute2.py`).",
            "- **mininet**: Mininet 2.3, LinuxBridge, no controller (`bench/alt_mininet.py`), "
            "star and chain; its verify runs the same checks with `ping` from each node's shell.",
            "- labctl verify = the topology's checks (up to 10 sampled pairs); all-pairs for N <= %d." % ALL_PAIRS_MAX,
            "", "What each tool's lab is like when its `up` returns:", "",
            "| tool | state at the end of `up` |", "|---|---|"] + [
            "| %s | %s |" % (tool, END_STATE[tool]) for tool in TOOLS if tool in a.tools] + [""]
    order = ["star", "chain", "tree", "campus"]
    keys = sorted({(r["topo"], r["n"]) for r in rows}, key=lambda k: (order.index(k[0]), k[1]))
    # Summary: key ratios
    out += ["## Key ratios (labctl ÷ alternative, min / median / max)", "",
            "| topology | N | alternative | up | down | up+verify+down |", "|---|---|---|---|---|---|"]
    for kind, n in keys:
        for alt in TOOLS[1:]:
            ups, downs, tots = [], [], []
            lu, ld, lv = by_rep(topo=kind, n=n, tool="labctl", phase="up"), \
                by_rep(topo=kind, n=n, tool="labctl", phase="down"), \
                by_rep(topo=kind, n=n, tool="labctl", phase="verify")
            au, ad, av = by_rep(topo=kind, n=n, tool=alt, phase="up"), \
                by_rep(topo=kind, n=n, tool=alt, phase="down"), by_rep(topo=kind, n=n, tool=alt, phase="verify")
            for rep in lu:
                if rep in au and au[rep] > 0:
                    ups.append(lu[rep] / au[rep])
                if rep in ld and rep in ad and ad[rep] > 0:
                    downs.append(ld[rep] / ad[rep])
                if rep in ld and rep in ad and rep in lv and rep in av:
                    tots.append((lu[rep] + lv[rep] + ld[rep]) / (au[rep] + av[rep] + ad[rep]))
            if ups or downs:
                out.append("| %s | %d | %s | %s | %s | %s |" % (kind, n, alt, mmm(ups), mmm(downs), mmm(tots)))
    out.append("")
    # Operating a running lab, as fractions of the same repetition's `up`.
    ops = ("apply-noop", "apply-add-node", "link-down", "link-up")
    if any(sel(tool="labctl", phase=p) for p in ops):
        out += ["## Operating a running lab: labctl's time ÷ its `up` (same repetition), min / median / max", "",
                "Targets (issue 15): apply without changes and apply adding one node <= 0.10 of `up` "
                "at N = 1,000; `link down` / `link up` <= 0.02.", "",
                "| topology | N | " + " | ".join(ops) + " |", "|---|---|" + "---|" * len(ops)]
        for kind, n in keys:
            ups = by_rep(topo=kind, n=n, tool="labctl", phase="up")
            cells = []
            for p in ops:
                xs = by_rep(topo=kind, n=n, tool="labctl", phase=p)
                cells.append(mmm([xs[r] / ups[r] for r in xs if r in ups and ups[r] > 0]))
            out.append("| %s | %d | %s |" % (kind, n, " | ".join(cells)))
        out.append("")
    # Full tables
    out += ["## Wall times (s) and peak RSS of `up`", ""]
    for kind, n in keys:
        out += ["### %s, N = %d" % (kind, n), "",
                "| tool | up | verify | all-pairs | down | peak RSS of up (MB) | checks ok |",
                "|---|---|---|---|---|---|---|"]
        for tool in TOOLS:
            rs = sel(topo=kind, n=n, tool=tool)
            if not rs:
                continue

            def ph(p, rs=rs):
                return [r["seconds"] for r in rs if r["phase"] == p]

            rss = [r["rss_kb"] / 1024 for r in rs if r["phase"] == "up" and r.get("rss_kb")]
            oks = ["%s/%s" % (r.get("ok"), r.get("checks")) for r in rs if r["phase"] in ("verify", "all-pairs")
                   and r.get("checks") is not None]
            out.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                tool, mmm(ph("up")), mmm(ph("verify")), mmm(ph("all-pairs")), mmm(ph("down")),
                mmm(rss), ", ".join(sorted(set(oks))) or "-"))
        out.append("")
    # Growth (the campus has its own sizes: campus_report)
    if any(r["topo"] != "campus" for r in rows):
        out += ["## Growth: milliseconds per node (median), labctl and the floor", "",
                "Flat or falling along a row means linear (or better) growth.", "",
                "| topology | tool | phase | " + " | ".join("N=%d" % n for n in a.n) + " |",
                "|---|---|---|" + "---|" * len(a.n)]
        for kind in ["star", "chain", "tree"]:
            for tool in ("labctl", "labctl1", "floor", "ipbatch"):
                for phase in ("up", "verify", "down"):
                    cells, anyv = [], False
                    for n in a.n:
                        xs = [r["seconds"] for r in sel(topo=kind, n=n, tool=tool, phase=phase)]
                        if xs:
                            nodes = len(T.GENERATORS[kind](n).nodes)
                            cells.append("%.3f" % (statistics.median(xs) * 1000 / nodes))
                            anyv = True
                        else:
                            cells.append("-")
                    if anyv:
                        out.append("| %s | %s | %s | %s |" % (kind, tool, phase, " | ".join(cells)))
        out.append("")
    out += campus_report(rows, a)
    if bench.skips:
        out += ["## Skipped", ""] + ["- %s: %s" % s for s in bench.skips] + [""]
    if bench.notes:
        out += ["## Notes from this run", ""] + ["- " + x for x in bench.notes] + [""]
    return "\n".join(out) + "\n"


def main():
    env_n = os.environ.get("BENCH_N", "10 100 1000 2000")
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", default=env_n,
                    help="N values (BENCH_N), default '%(default)s'; chain stops at 1000, star at 1023")
    ap.add_argument("--reps", type=int, default=int(os.environ.get("BENCH_REPS") or 0),
                    help="repetitions (BENCH_REPS); default: the number of tools, so that every "
                         "tool runs in every position once")
    ap.add_argument("--topos", default=os.environ.get("BENCH_TOPOS", "star chain tree campus"))
    ap.add_argument("--campus-n", default=os.environ.get("BENCH_CAMPUS_N", "1000 5000 10000"),
                    help="the campus's sizes (BENCH_CAMPUS_N), default '%(default)s'")
    ap.add_argument("--campus-tools", default=os.environ.get("BENCH_CAMPUS_TOOLS", CAMPUS_TOOLS),
                    help="the tools that run the campus (BENCH_CAMPUS_TOOLS; those of --tools), "
                         "default '%(default)s'")
    ap.add_argument("--tools", default=os.environ.get("BENCH_TOOLS", " ".join(TOOLS)))
    ap.add_argument("--mininet-max", type=int, default=int(os.environ.get("BENCH_MININET_MAX", "1000")))
    ap.add_argument("--labctl", default=os.environ.get("LABCTL", os.path.join(ROOT, "build", "labctl")))
    ap.add_argument("--out", default=os.environ.get("BENCH_OUT", os.path.join(HERE, "RESULTS.md")))
    ap.add_argument("--json", default=os.environ.get("BENCH_JSON"), help="also write raw rows here")
    ap.add_argument("--smoke", action="store_true", help="N=10, 1 repetition, no installs")
    a = ap.parse_args()
    if a.smoke:
        a.n, a.campus_n, a.reps = "10", "10", 1
    a.n = [int(x) for x in str(a.n).replace(",", " ").split()]
    a.campus_n = [int(x) for x in str(a.campus_n).replace(",", " ").split()]
    a.topos = a.topos.replace(",", " ").split()
    a.tools = a.tools.replace(",", " ").split()
    a.campus_tools = [x for x in a.campus_tools.replace(",", " ").split() if x in a.tools]
    if os.geteuid() != 0:
        raise SystemExit("the benchmark needs root (namespaces and interfaces)")
    if not os.access(a.labctl, os.X_OK):
        raise SystemExit("no labctl at %s: build first (make build)" % a.labctl)
    m_start = machine()
    t0 = time.monotonic()
    b = Bench(a)
    b.run()
    m_end = machine()
    text = report(b, m_start, m_end, time.monotonic() - t0)
    with open(a.out, "w") as f:
        f.write(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": m_start, "rows": b.results, "skips": b.skips, "notes": b.notes}, f, indent=1)
    log("wrote", a.out)


if __name__ == "__main__":
    main()
