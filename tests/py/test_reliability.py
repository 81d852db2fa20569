"""Reliability and security (docs/reliability.md): a suite that attacks labctl.

Kills at many points of `up`, injected kernel errors, concurrent labs with identical
names and addresses, namespaces and state files planted by someone else, fd limits,
missing privileges and shell metacharacters. After each, the host must show nothing of
the lab: `ip netns list`, /run/netns, nsfs mounts, the root namespace's links,
addresses and routes, and the state directory.

Every lab name comes from labfix.unique_name("rl"); tests that need `down --all` or
planted state files use a private LABCTL_STATE_DIR, never the shared /run/labctl.
"""
import difflib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

import killpoints
from conftest import LABCTL, STATE_ROOT, run_labctl
from labfix import ip_json, lab_namespaces, root_snapshot, star, unique_name

DEFAULT_STATE = STATE_ROOT  # /run/labctl unless LABCTL_STATE_DIR says otherwise


# ---- witnesses -------------------------------------------------------------------------

def run_netns_files(name):
    try:
        return sorted(f for f in os.listdir("/run/netns") if f.startswith(name + "-"))
    except FileNotFoundError:
        return []


def nsfs_mounts(name):
    """Mount points of nsfs mounts of the lab (as `findmnt -t nsfs` lists them)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "nsfs" and fields[4].startswith(f"/run/netns/{name}-"):
                out.append(fields[4])
    return out


def assert_clean(name, root_before=None, state_root=DEFAULT_STATE):
    assert lab_namespaces(name) == [], f"namespaces of {name} left"
    assert run_netns_files(name) == [], f"/run/netns files of {name} left"
    assert nsfs_mounts(name) == [], f"nsfs mounts of {name} left"
    assert not os.path.lexists(os.path.join(state_root, name)), f"state of {name} left"
    if root_before is not None:
        assert_root_unchanged(root_before)


def assert_root_unchanged(before):
    now = root_snapshot()
    diff = [f"{k}:\n" + "".join(difflib.unified_diff(before[k].splitlines(True), now[k].splitlines(True), n=0))
            for k in before if before[k] != now[k]]
    assert not diff, "the root namespace changed:\n" + "\n".join(diff)


def private_env(state_dir, **extra):
    env = dict(os.environ, LABCTL_STATE_DIR=str(state_dir))
    env.update(extra)
    return env


@pytest.fixture
def private_state(tmp_path):
    """A private state directory: `down --all` there removes only this test's labs."""
    d = tmp_path / "state"
    yield d
    if d.is_dir() and not d.is_symlink():
        run_labctl("down", "--all", env=private_env(d))


def two_nodes(addr_a="10.9.0.1/24", addr_b="10.9.0.2/24", **node_extra):
    doc = {
        "nodes": {"a": {"interfaces": {"eth0": {"addresses": [addr_a]}}},
                  "b": {"interfaces": {"eth0": {"addresses": [addr_b]}}}},
        "links": [{"endpoints": ["a:eth0", "b:eth0"]}],
        "checks": [{"from": "a", "to": "b"}],
    }
    for node, extra in node_extra.items():
        doc["nodes"][node].update(extra)
    return doc


# ---- SIGKILL at many points of a 200-node up ---------------------------------------------

STAR_HOSTS = 199
KILL_POINTS = killpoints.points_of_star(STAR_HOSTS)


@pytest.mark.parametrize("point", range(len(KILL_POINTS)), ids=[p[0].replace(" ", "-") for p in KILL_POINTS])
def test_sigkill_at_spread_points_of_200_node_up(labs, tmp_path, point):
    """SIGKILL at an observed point of `up` (from "journal begun" to "exec command
    running"): `up` is stopped there, the partial state it leaves is recorded (and must
    be partial: no "up" in the journal), it is killed; then `down` (even points) or a new
    `up` + `down` (odd points) leaves nothing, not even the exec command."""
    marker = tmp_path / "exec-started"
    path, name = labs.write(killpoints.star_with_exec(star(STAR_HOSTS), marker), name=unique_name("rl"))
    root_before = root_snapshot()
    p = subprocess.Popen([LABCTL, "up", str(path), "--no-verify"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        killed_at = killpoints.stop_at(p, name, STAR_HOSTS, KILL_POINTS[point], marker)
    finally:
        assert killpoints.kill_stopped(p) == -signal.SIGKILL
    assert KILL_POINTS[point][1](killed_at) and not killed_at.complete, killed_at
    exec_cmd = killpoints.exec_process(marker)  # running when killed at the last points
    assert lab_namespaces(name) or killed_at.namespaces == 0, killed_at  # what it left is still there
    if point % 2:
        killpoints.release_exec(marker)
        r = run_labctl("up", path, "--no-verify")
        assert r.returncode == 0, r.stderr
        assert len(lab_namespaces(name)) == STAR_HOSTS + 1
        assert "removed the leftovers of an interrupted `up`" in r.stderr, (killed_at, r.stderr)
    r = run_labctl("down", name)
    assert r.returncode == 0, r.stderr
    assert_clean(name, root_before)
    assert not killpoints.process_alive(*exec_cmd), "the exec command outlived down"


# ---- injected kernel errors ---------------------------------------------------------------

@pytest.mark.parametrize("seed", range(1, 9))
def test_injected_kernel_errors_succeed_or_roll_back(labs, seed):
    """A fraction of netlink requests fails with EEXIST/ENODEV/EBUSY/ENOBUFS: `up` either
    succeeds (transient errors retried) or exits 3 having removed everything."""
    path, name = labs.write(star(19), name=unique_name("rl"))
    root_before = root_snapshot()
    env = dict(os.environ, LABCTL_NL_FAULTS=f"EEXIST,ENODEV,EBUSY,ENOBUFS,DUMP_INTR:0.02:{seed}")
    r = run_labctl("up", path, "--no-verify", env=env)
    assert r.returncode in (0, 3), r.stdout + r.stderr
    if r.returncode == 3:
        assert "injected fault" in r.stderr or "(E" in r.stderr, r.stderr
        assert_clean(name, root_before)
    else:
        assert len(lab_namespaces(name)) == 20
        assert run_labctl("verify", name).returncode == 0
        assert run_labctl("down", name).returncode == 0
        assert_clean(name, root_before)


@pytest.mark.parametrize("seed", range(1, 6))
def test_transient_kernel_errors_are_retried(labs, seed):
    """EBUSY and ENOBUFS on 3% of the requests (some of a few hundred fail without
    retries), and 3% of dump answers flagged interrupted: bounded retries (4 attempts;
    10 for a dump) make `up` succeed. At 10% a request fails all
    four attempts with probability 1e-4: bounded means exactly that, so it is not used."""
    path, name = labs.write(star(19), name=unique_name("rl"))
    env = dict(os.environ, LABCTL_NL_FAULTS=f"EBUSY,ENOBUFS,DUMP_INTR:0.03:{seed}")
    t0 = time.monotonic()
    r = run_labctl("up", path, env=env)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 10
    assert len(lab_namespaces(name)) == 20
    assert run_labctl("down", name).returncode == 0
    assert_clean(name)


# ---- concurrency ---------------------------------------------------------------------------

def mac_of(ns, ifname):
    return [item for item in ip_json(ns, "link", "show") if item["ifname"] == ifname][0]["address"]


def test_identical_labs_side_by_side_no_cross_talk(labs):
    """Two labs with the same nodes, interfaces AND addresses, up at once, 20 times: each
    lab's check passes and each a's neighbour entry for 10.9.0.2 is its own b's MAC."""
    for rnd in range(20):
        docs = [labs.write(two_nodes(), name=unique_name("rl")) for _ in range(2)]
        procs = [subprocess.Popen([LABCTL, "up", str(p)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for p, _ in docs]
        outs = [(p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for p in procs]
        for code, out, err in outs:
            assert code == 0 and "1 passed, 0 failed" in out, (rnd, out, err)
        macs = {n: mac_of(f"{n}-b", "eth0") for _, n in docs}
        assert len(set(macs.values())) == 2
        for _, n in docs:
            assert run_labctl("verify", n).returncode == 0
            neigh = {e["dst"]: e.get("lladdr") for e in ip_json(f"{n}-a", "neigh", "show", "dev", "eth0")}
            assert neigh.get("10.9.0.2") == macs[n], (rnd, n, neigh, macs)
        for _, n in docs:
            assert run_labctl("down", n).returncode == 0
            assert_clean(n)


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.05, 0.15])
def test_up_and_down_of_one_lab_serialize(labs, delay):
    """`up` and `down` started together: both exit cleanly and the lab ends fully up or
    fully gone, never half."""
    path, name = labs.write(star(39), name=unique_name("rl"))
    up = subprocess.Popen([LABCTL, "up", str(path), "--no-verify"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    down = subprocess.Popen([LABCTL, "down", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    (_, ue), (_, de) = up.communicate(timeout=60), down.communicate(timeout=60)
    assert up.returncode in (0, 3), ue
    assert down.returncode in (0, 3), de
    st = json.loads(run_labctl("status", name, "--json").stdout or "{}")
    mine = lab_namespaces(name)
    if mine:
        assert len(mine) == 40 and st.get("state") == "up", (mine, st)
        assert run_labctl("down", name).returncode == 0
    else:
        assert st.get("state") in (None, "down"), st
    assert_clean(name)


def test_killed_lock_holder_releases_the_lock(labs, tmp_path):
    """SIGKILL an `up` that holds the lab's lock (it sits in a 60 s exec command): the
    next `down` gets the lock at once and removes the lab and the orphaned command."""
    marker = tmp_path / "started"
    doc = killpoints.star_with_exec(star(2), marker)
    path, name = labs.write(doc, name=unique_name("rl"))
    p = subprocess.Popen([LABCTL, "up", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        killpoints.stop_at(p, name, 2, killpoints.points_of_star(2)[-1], marker, timeout=30)
    finally:
        killpoints.kill_stopped(p)
    orphan = killpoints.exec_process(marker)
    assert killpoints.process_alive(*orphan), "the exec command is not running"
    t0 = time.monotonic()
    r = run_labctl("down", name, timeout=30)
    assert r.returncode == 0, r.stderr
    # Its own budget: the lock is free at once, and stopping the orphan (SIGTERM, which
    # sleep obeys) takes no grace period; 10 s is far from both.
    assert time.monotonic() - t0 < 10, "down waited for a lock nobody holds"
    assert_clean(name)
    assert not killpoints.process_alive(*orphan), "the exec command outlived down"


def test_children_never_inherit_the_lock_fd(labs, tmp_path):
    """An exec command (run while `up` holds the lock and the journal) and a daemon list
    their open fds: no lock file, no journal, nothing of the state directory."""
    out = tmp_path / "fds"
    out.mkdir()
    doc = two_nodes(a={"exec": [["sh", "-c", f"ls -l /proc/self/fd/ > {out}/exec.txt; "
                                             f"cat /proc/$$/fdinfo/* > {out}/exec.info 2>/dev/null; true"]],
                       "daemons": [["sh", "-c", f"ls -l /proc/self/fd/ > {out}/daemon.tmp; "
                                                f"mv {out}/daemon.tmp {out}/daemon.txt; exec sleep 60"]]})
    path, name = labs.write(doc, name=unique_name("rl"))
    r = run_labctl("up", path)
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 10
    while not (out / "daemon.txt").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    r = run_labctl("exec", name, "b", "--", "ls", "-l", "/proc/self/fd/")
    assert r.returncode == 0
    # fdinfo lists the locks held through an fd ("lock: ... FLOCK ..."): none may be there.
    assert "FLOCK" not in (out / "exec.info").read_text()
    for listing in [(out / "exec.txt").read_text(), (out / "daemon.txt").read_text(), r.stdout]:
        targets = [line.split(" -> ", 1)[1] for line in listing.splitlines() if " -> " in line]
        assert targets, listing
        for t in targets:
            assert not t.endswith(".lock") and "/.locks" not in t and not t.endswith("/journal"), listing
            # Only a daemon's own log (its stdout/stderr) may be in the state directory.
            assert not t.startswith(DEFAULT_STATE) or "/logs/" in t, listing
    assert run_labctl("down", name).returncode == 0
    assert_clean(name)


# ---- host safety --------------------------------------------------------------------------

def test_lookalike_namespace_and_interfaces_untouched(labs, private_state):
    """A namespace `<lab>-x` holding eth0 and br0, made by someone else, survives `up`,
    `down` and `down --all` of the lab byte for byte (same inode, same links)."""
    env = private_env(private_state)
    path, name = labs.write(star(2), name=unique_name("rl"))
    other = f"{name}-x"
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:
        subprocess.run(["ip", "-n", other, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"], check=True)
        subprocess.run(["ip", "-n", other, "link", "add", "br0", "type", "bridge"], check=True)
        subprocess.run(["ip", "-n", other, "addr", "add", "10.77.0.1/24", "dev", "eth0"], check=True)

        def witness():
            return (os.stat(f"/run/netns/{other}").st_ino,
                    subprocess.run(["ip", "-n", other, "-d", "link", "show"], capture_output=True,
                                   text=True).stdout,
                    subprocess.run(["ip", "-n", other, "addr", "show"], capture_output=True, text=True).stdout)

        before = witness()
        root_before = root_snapshot()
        assert run_labctl("up", path, env=env).returncode == 0
        assert witness() == before
        assert run_labctl("down", name, env=env).returncode == 0
        assert witness() == before
        assert run_labctl("up", path, env=env).returncode == 0
        r = run_labctl("down", "--all", env=env)
        assert r.returncode == 0, r.stderr
        assert witness() == before
        assert lab_namespaces(name) == [other]
        assert_clean_but(name, other, private_state, root_before)
    finally:
        subprocess.run(["ip", "netns", "del", other])


def assert_clean_but(name, keep, state_root, root_before):
    assert [n for n in lab_namespaces(name) if n != keep] == []
    assert [m for m in nsfs_mounts(name) if m != f"/run/netns/{keep}"] == []
    assert not os.path.lexists(os.path.join(state_root, name))
    assert_root_unchanged(root_before)


def test_swapped_namespace_is_refused_not_deleted(labs):
    """`<lab>-h1` deleted and re-made behind labctl's back (new inode): `down` exits 3
    naming it, leaves it alone, and removes the rest of the lab."""
    path, name = labs.write(star(2), name=unique_name("rl"))
    assert run_labctl("up", path, "--no-verify").returncode == 0
    impostor = f"{name}-h1"
    old = os.stat(f"/run/netns/{impostor}")
    subprocess.run(["ip", "netns", "del", impostor], check=True)
    subprocess.run(["ip", "netns", "add", impostor], check=True)
    try:
        new_ino = os.stat(f"/run/netns/{impostor}").st_ino
        nsid = os.stat(f"/run/netns/{impostor}")
        assert (nsid.st_dev, nsid.st_ino) != (old.st_dev, old.st_ino)
        r = run_labctl("down", name)
        assert r.returncode == 3, r.stdout + r.stderr
        assert impostor in r.stderr and "not the one labctl created" in r.stderr, r.stderr
        assert lab_namespaces(name) == [impostor]
        assert os.stat(f"/run/netns/{impostor}").st_ino == new_ino
        assert not os.path.exists(f"{DEFAULT_STATE}/{name}")
    finally:
        subprocess.run(["ip", "netns", "del", impostor])
    assert_clean(name)


@pytest.mark.parametrize("foreign", ["victim", "{lab}-../victim"])
def test_journal_naming_a_foreign_namespace_is_refused(labs, foreign):
    """A journal altered to name a namespace outside the lab (`<lab>-<node>`), even with
    its true identity, or a path out of /run/netns: `down` exits 3 naming it, leaves it
    alone, and removes the lab's own namespaces."""
    path, name = labs.write(star(2), name=unique_name("rl"))
    victim = unique_name("victim")
    subprocess.run(["ip", "netns", "add", victim], check=True)
    try:
        assert run_labctl("up", path, "--no-verify").returncode == 0
        st = os.stat(f"/run/netns/{victim}")
        recorded = foreign.replace("victim", victim).format(lab=name)
        with open(f"{DEFAULT_STATE}/{name}/journal", "a") as j:
            j.write(json.dumps({"event": "netns-created", "namespaces": [
                {"name": recorded, "dev": st.st_dev, "ino": st.st_ino}]}) + "\n")
        r = run_labctl("down", name)
        assert r.returncode == 3, r.stdout + r.stderr
        assert f"'{recorded}'" in r.stderr and "left alone" in r.stderr, r.stderr
        assert os.stat(f"/run/netns/{victim}").st_ino == st.st_ino
        assert lab_namespaces(name) == []
        assert not os.path.exists(f"{DEFAULT_STATE}/{name}")
    finally:
        subprocess.run(["ip", "netns", "del", victim])
    assert_clean(name)


def plant(kind, state, name, tmp_path):
    """Plants something hostile in the private state directory `state`."""
    state.mkdir(mode=0o700, exist_ok=True)
    if kind == "lab-dir-symlink":
        target = tmp_path / "elsewhere"
        target.mkdir()
        os.symlink(target, state / name)
        return target
    if kind == "lock-symlink":
        (state / ".locks").mkdir(mode=0o700)
        target = tmp_path / "victim"
        target.write_text("precious\n")
        os.symlink(target, state / ".locks" / f"{name}.lock")
        return target
    if kind == "locks-dir-symlink":
        target = tmp_path / "elsewhere"
        target.mkdir()
        os.symlink(target, state / ".locks")
        return target
    if kind == "lab-dir-foreign":
        (state / name).mkdir(mode=0o700)
        os.chown(state / name, 1234, 1234)
        return state / name
    if kind == "lock-foreign":
        (state / ".locks").mkdir(mode=0o700)
        (state / ".locks" / f"{name}.lock").write_text("")
        os.chown(state / ".locks" / f"{name}.lock", 1234, 1234)
        return state / ".locks" / f"{name}.lock"
    if kind == "root-foreign":
        os.chown(state, 1234, 1234)
        return state
    if kind == "root-symlink":
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o700)
        state.rmdir()
        os.symlink(target, state)
        return target
    if kind == "root-world-writable":
        os.chmod(state, 0o777)
        return state
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["lab-dir-symlink", "lock-symlink", "locks-dir-symlink", "lab-dir-foreign",
                                  "lock-foreign", "root-foreign", "root-symlink", "root-world-writable"])
def test_state_paths_refuse_symlinks_and_foreign_owners(labs, tmp_path, kind):
    """Planted symlinks, foreign owners (uid 1234) and world-writable state directories:
    `up` and `down` refuse (exit 3, saying why), create no namespace, and never write
    through the link."""
    state = tmp_path / "state"
    path, name = labs.write(two_nodes(), name=unique_name("rl"))
    target = plant(kind, state, name, tmp_path)
    before = sorted(os.listdir(target)) if target.is_dir() else target.read_bytes()
    env = private_env(state)
    r = run_labctl("up", path, env=env)
    assert r.returncode == 3, r.stdout + r.stderr
    assert any(w in r.stderr for w in ("symlink", "symbolic link", "uid 1234", "not to us", "of ours",
                                       "writable by others")), r.stderr
    assert lab_namespaces(name) == []
    after = sorted(os.listdir(target)) if target.is_dir() else target.read_bytes()
    assert after == before
    d = run_labctl("down", name, env=env)
    assert d.returncode == 3, d.stdout + d.stderr
    assert lab_namespaces(name) == []


# ---- limits --------------------------------------------------------------------------------

def test_thousand_nodes_come_up_under_1024_fds(labs):
    """`up` of a 1,000-node lab with RLIMIT_NOFILE 1024 (soft and hard): it works, since
    building holds the fds of a bounded number of nodes at a time, and goes down again."""
    doc = star(999, checks=False)
    path, name = labs.write(doc, name=unique_name("rl"))
    root_before = root_snapshot()
    r = subprocess.run(["prlimit", "--nofile=1024:1024", LABCTL, "up", str(path), "--no-verify"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(lab_namespaces(name)) == 1000
    assert run_labctl("down", name).returncode == 0
    assert_clean(name, root_before)


CYCLES = int(os.environ.get("LABCTL_RL_CYCLES", "200"))
CYCLE_BUDGET_S = float(os.environ.get("LABCTL_RL_CYCLE_SECONDS", "50"))
MIN_CYCLES = 20


def test_many_up_down_cycles_stay_flat(labs, record_property, capsys):
    """Up to CYCLES (200) up/down cycles of a two-node lab, within CYCLE_BUDGET_S seconds
    (at least MIN_CYCLES): nsfs mounts, namespaces and the state directory end where
    they began (the host-wide open-file count is too noisy on a shared machine to
    check; each CLI run's own fds end with it). On a loaded host the budget cuts the
    run short: the count run is reported."""
    path, name = labs.write(two_nodes(), name=unique_name("rl"))

    def counts():
        with open("/proc/self/mountinfo") as f:
            mounts = sum(1 for line in f if "/run/netns/" + name + "-" in line)
        return mounts, lab_namespaces(name), sorted(os.listdir(DEFAULT_STATE)).count(name)

    start = counts()
    t0 = time.monotonic()
    done = 0
    while done < CYCLES and (done < MIN_CYCLES or time.monotonic() - t0 < CYCLE_BUDGET_S):
        r = run_labctl("up", path, "--no-verify")
        assert r.returncode == 0, (done, r.stderr)
        r = run_labctl("down", name)
        assert r.returncode == 0, (done, r.stderr)
        done += 1
        if done % 25 == 0:
            assert counts() == start, done
    record_property("cycles", done)
    with capsys.disabled():
        print(f"\n[{done} up/down cycles in {time.monotonic() - t0:.1f} s]", end=" ")
    assert counts() == start == (0, [], 0)
    assert_clean(name)


# ---- privileges -----------------------------------------------------------------------------

@pytest.fixture
def public_dir():
    """A directory user nobody can read (pytest's tmp_path is root-only)."""
    d = tempfile.mkdtemp(prefix="labctl-rl-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d)


@pytest.mark.parametrize("how", [
    ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
    ["capsh", "--drop=cap_net_admin,cap_sys_admin", "--"],
    ["setpriv", "--bounding-set=-net_admin,-sys_admin"],
], ids=["other-uid", "capsh-drop", "bounding-set"])
def test_without_privileges_clear_message_nothing_touched(labs, public_dir, how):
    name = unique_name("rl")
    doc = dict(two_nodes(), name=name)
    path = os.path.join(public_dir, "topo.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    os.chmod(path, 0o644)
    labs.names.add(name)
    root_before = root_snapshot()
    state_before = sorted(os.listdir(DEFAULT_STATE)) if os.path.isdir(DEFAULT_STATE) else []
    if how[0] == "capsh":
        cmd = how + ["-c", f"exec {LABCTL} up {path}"]
    else:
        # The bounding set alone: root keeps its capabilities until it execs labctl,
        # whose permitted (and effective) set the kernel then limits to the bounding set.
        cmd = how + [LABCTL, "up", path]
    other_uid = any(a.startswith("--reuid") for a in how)
    # Another uid runs rootless (docs/rootless.md): pointed at root's state directory it is
    # refused before anything is touched, naming the directory.
    env = {**os.environ, "LABCTL_STATE_DIR": DEFAULT_STATE} if other_uid else None
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 3, r.stdout + r.stderr
    if other_uid:
        assert f"state directory {DEFAULT_STATE} " in r.stderr and "refusing" in r.stderr, r.stderr
    else:
        assert "CAP_NET_ADMIN" in r.stderr and "CAP_SYS_ADMIN" in r.stderr, r.stderr
    assert r.stderr.count("\n") <= 2, r.stderr
    assert lab_namespaces(name) == []
    assert not os.path.exists(f"{DEFAULT_STATE}/{name}")
    assert f"{name}.lock" not in (os.listdir(f"{DEFAULT_STATE}/.locks") if os.path.isdir(
        f"{DEFAULT_STATE}/.locks") else [])
    now = sorted(os.listdir(DEFAULT_STATE)) if os.path.isdir(DEFAULT_STATE) else []
    assert name not in now and not (set(now) - set(state_before)) - {".locks"}
    assert_root_unchanged(root_before)


# ---- shell metacharacters -------------------------------------------------------------------

def test_shell_metacharacters_in_names_never_reach_a_shell(labs, tmp_path):
    """An interface named `$(touch /tmp/x)` is refused (exit 2) and nothing runs; names the
    schema allows although a shell would expand them (`$(id>q)`, `;id>q`, `|id>q`) are
    created literally through netlink, and no command runs in up, verify, status, down."""
    marker = f"/tmp/x{os.getpid()}"
    bad = two_nodes()
    bad["nodes"]["a"]["interfaces"] = {f"$(touch {marker})": {"addresses": ["10.9.0.1/24"]}}
    bad["links"] = [{"endpoints": [f"a:$(touch {marker})", "b:eth0"]}]
    path, name = labs.write(bad, name=unique_name("rl"))
    r = subprocess.run([LABCTL, "up", str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert not os.path.exists(marker) and not os.path.exists("/tmp/x")
    assert lab_namespaces(name) == []

    odd = ["$(id>q)", ";id>q", "|id>q", "`id>q`"]
    doc = {"nodes": {"a": {"interfaces": {n: {"addresses": [f"10.9.{i}.1/24"]} for i, n in enumerate(odd)}},
                     "b": {"interfaces": {n: {"addresses": [f"10.9.{i}.2/24"]} for i, n in enumerate(odd)}}},
           "links": [{"endpoints": [f"a:{n}", f"b:{n}"]} for n in odd],
           "checks": [{"from": f"a:{n}", "to": f"b:{n}"} for n in odd]}
    path, name = labs.write(doc, name=unique_name("rl"))
    for cmd in (["up", str(path)], ["verify", name], ["status", name], ["down", name]):
        r = subprocess.run([LABCTL, *cmd], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        if cmd[0] == "up":
            assert "4 passed, 0 failed" in r.stdout, r.stdout
            assert sorted(item["ifname"] for item in ip_json(f"{name}-a", "link", "show")) == sorted(odd + ["lo"])
    assert not (tmp_path / "q").exists()
    assert not os.path.exists("/q")
    assert_clean(name)


@pytest.mark.parametrize("command", ["validate", "up", "verify", "graph", "down", "status"])
def test_deep_and_huge_files_bounded_in_time_and_memory(tmp_path, command):
    """A 1,000,000-deep JSON file and a 50 MB one, under a 1 GiB address-space limit: every
    command that reads a topology file answers within 5 s and touches nothing."""
    name = unique_name("rl")
    deep = tmp_path / "deep.json"
    deep.write_text('{"name": "%s", "nodes": ' % name + "[" * 1_000_000 + "]" * 1_000_000 + "}")
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"name": name, "nodes": {"a": {"description": "x" * (50 << 20)}}}))
    for f in (deep, huge):
        t0 = time.monotonic()
        r = subprocess.run(["prlimit", "--as=1073741824", LABCTL, command, str(f)], capture_output=True,
                           text=True, timeout=60)
        took = time.monotonic() - t0
        assert took < 5, (command, f.name, took)
        if command in ("down", "status") and f == deep:
            # These need only the lab's name and read it from the (invalid) file; the
            # lab is not up, which `status` says as of any unknown lab (exit 2).
            assert r.returncode in ((0, 3) if command == "down" else (2,)), r.stderr
            assert command == "down" or "is not up" in r.stderr
        else:
            assert r.returncode == 2, (command, f.name, r.stdout, r.stderr)
            assert "nested deeper" in r.stderr or "limited to 16 MiB" in r.stderr, r.stderr
        assert lab_namespaces(name) == []


def test_percent_d_interface_name_refused(labs):
    doc = two_nodes()
    doc["nodes"]["a"]["interfaces"] = {"eth%d": {"addresses": ["10.9.0.1/24"]}}
    doc["links"] = [{"endpoints": ["a:eth%d", "b:eth0"]}]
    path, name = labs.write(doc, name=unique_name("rl"))
    r = run_labctl("up", path)
    assert r.returncode == 2 and "%" in r.stderr, r.stderr
    assert lab_namespaces(name) == []
