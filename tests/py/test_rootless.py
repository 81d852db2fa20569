"""Rootless labs (contract part two, section 7; issue 18), end to end: every command run as
an unprivileged uid (setpriv --reuid=65534 ... --inh-caps=-all; sudo is not installed), in
user namespaces that uid owns, held by its keeper (docs/rootless.md).

The tests themselves run as root (as the whole suite does): root makes the users' scratch
directories, compares the root namespace before and after, reads /proc, and kills a
keeper (a process these tests started) to see what is left."""
import json
import os
import pathlib
import signal
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import LABCTL, ROOT, ROOTLESS_IN_CHROOT, ROOTLESS_REFUSED, chrooted
from labfix import root_snapshot, unique_name

USER = 65534
OTHER_USER = 65533


def setpriv(uid):
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all"]


def netns_names():
    """What `ip netns` shows (root's /run/netns)."""
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout
    return {n["name"] for n in json.loads(out or "[]")}


def root_ip_json():
    """The root namespace as `ip -j` reports it: links, addresses, IPv4 and IPv6 routes."""
    def ip(*args):
        return json.loads(subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout)
    return {"link": ip("link"), "addr": ip("addr"), "route": ip("route", "show", "table", "all"),
            "route6": ip("-6", "route", "show", "table", "all")}


def proc_uid(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return None


def start_time(pid):
    """Field 22 of /proc/PID/stat; None when no such process runs (a zombie does not)."""
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def wait_gone(pid, seconds=5):
    deadline = time.monotonic() + seconds
    while start_time(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    return start_time(pid) is None


class User:
    """An unprivileged uid with a scratch directory of its own (mode 0700) holding its
    topology files and its state directory; runs labctl (and Python) as that uid."""

    def __init__(self, uid, state=None):
        self.uid = uid
        self.home = pathlib.Path(tempfile.mkdtemp(prefix=f"rl-u{uid}-", dir="/tmp"))
        os.chown(self.home, uid, uid)
        self.state = pathlib.Path(state) if state else self.home / "state"
        self.env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                    "HOME": str(self.home), "LABCTL_STATE_DIR": str(self.state),
                    "LABCTL_KEEPER_IDLE": "1", "PYTHONPATH": str(ROOT / "build" / "python"),
                    "LANG": "C.UTF-8"}

    def write(self, name, doc):
        path = self.home / name
        path.write_text(json.dumps(doc, indent=1))
        os.chown(path, self.uid, self.uid)
        return path

    def run(self, *args, timeout=120, cmd=None):
        argv = setpriv(self.uid) + (cmd or [LABCTL]) + [str(a) for a in args]
        return subprocess.run(argv, capture_output=True, text=True, env=self.env, cwd=self.home, timeout=timeout)

    def python(self, code, timeout=120):
        return self.run("-c", code, timeout=timeout, cmd=["/usr/bin/python3"])

    def keeper(self):
        """(pid, start time) of this user's keeper, None when it has none."""
        try:
            pid, start = (self.state / ".keeper.pid").read_text().split()
        except (OSError, ValueError):
            return None
        return int(pid), int(start)

    def cleanup(self):
        self.run("down", "--all")
        deadline = time.monotonic() + 10
        while self.keeper() and time.monotonic() < deadline:
            time.sleep(0.2)
        k = self.keeper()
        if k and start_time(k[0]) == k[1]:  # a keeper these tests started, still there
            os.kill(k[0], signal.SIGKILL)
        shutil.rmtree(self.home, ignore_errors=True)


def userns_refused():
    """Why an unprivileged process cannot make a user namespace here, or None. Linux refuses
    CLONE_NEWUSER to a chrooted process (fresh-debian.sh's chroot), and a host may disable
    them; then no rootless lab can come up here, and the tests that need one skip, saying
    why (the refusal itself is tested with a stand-in /proc)."""
    probe = subprocess.run([*setpriv(USER), "unshare", "--user", "true"], capture_output=True)
    if probe.returncode == 0:
        return None
    return ROOTLESS_IN_CHROOT if chrooted() else ROOTLESS_REFUSED


@pytest.fixture
def user():
    why = userns_refused()
    if why:
        pytest.skip(why)
    u = User(USER)
    try:
        yield u
    finally:
        u.cleanup()


def routed_lab(name, daemon=True):
    """h1 - r1 - h2 across a router, with a daemon on h1 and a check each way."""
    doc = {
        "name": name,
        "nodes": {
            "h1": {"interfaces": {"eth0": {"addresses": ["10.0.1.10/24", "fd00:1::10/64"]}},
                   "routes": [{"to": "default", "via": "10.0.1.1"}, {"to": "default", "via": "fd00:1::1"}]},
            "r1": {"kind": "router",
                   "interfaces": {"eth1": {"addresses": ["10.0.1.1/24", "fd00:1::1/64"]},
                                  "eth2": {"addresses": ["10.0.2.1/24", "fd00:2::1/64"]}}},
            "h2": {"interfaces": {"eth0": {"addresses": ["10.0.2.10/24", "fd00:2::10/64"]}},
                   "routes": [{"to": "default", "via": "10.0.2.1"}, {"to": "default", "via": "fd00:2::1"}]},
        },
        "links": [{"endpoints": ["h1:eth0", "r1:eth1"]}, {"endpoints": ["r1:eth2", "h2:eth0"]}],
        "checks": [{"from": "h1", "to": "h2"}, {"from": "h2", "to": "fd00:1::10"},
                   {"from": "h1", "to": "203.0.113.9", "expect": "unreachable"}],
    }
    if daemon:
        doc["nodes"]["h1"]["daemons"] = [["sleep", "1000"]]
    return doc


def daemon_pids(status):
    return [d["pid"] for n in status["nodes"] for d in n.get("daemons", []) if d.get("pid")]


def test_cli_end_to_end_as_an_unprivileged_user(user):
    before, before_netns, before_ip = root_snapshot(), netns_names(), root_ip_json()
    name = unique_name("rl")
    topo = user.write("lab.json", routed_lab(name))

    r = user.run("up", "lab.json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 passed, 0 failed" in r.stdout, r.stdout
    keeper = user.keeper()
    assert keeper and proc_uid(keeper[0]) == USER

    r = user.run("status")
    assert r.returncode == 0 and name in r.stdout and " up " in r.stdout, r.stdout + r.stderr
    r = user.run("status", name, "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["state"] == "up" and all(n["present"] for n in st["nodes"]), st
    assert "keeper_lost" not in st
    pids = daemon_pids(st)
    assert len(pids) == 1 and proc_uid(pids[0]) == USER  # root inside, the user outside

    # Nothing in /run/netns or the root namespace; the namespaces live in the keeper's tmpfs.
    assert not {n for n in netns_names() if n.startswith(name)}
    assert not any(p.name.startswith(name) for p in (user.state / ".netns").iterdir())

    r = user.run("exec", name, "h1", "--", "ip", "-j", "addr", "show", "eth0")
    assert r.returncode == 0, r.stderr
    assert "10.0.1.10" in {a["local"] for a in json.loads(r.stdout)[0]["addr_info"]}
    r = user.run("exec", name, "h1", "--", "id", "-u")
    assert r.stdout.strip() == "0", r.stdout
    r = user.run("exec", name, "h2", "--", "sh", "-c", "exit 7")
    assert r.returncode == 7
    assert user.run("exec", name, "h2", "--", "no-such-program").returncode == 127

    r = user.run("ping", name, "h1", "h2", "-c", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    r = user.run("ping", name, "h1", "203.0.113.9", "-c", "1", "-W", "1")
    assert r.returncode == 1, r.stdout + r.stderr
    r = user.run("verify", name, "--all-pairs")
    assert r.returncode == 0, r.stdout + r.stderr
    r = user.run("verify", "lab.json", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["score"] == json.loads(r.stdout)["max_score"]

    r = user.run("down", name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (user.state / name).exists()
    for pid in pids:
        assert start_time(pid) is None or proc_uid(pid) != USER
    r = user.run("status")
    assert r.returncode == 0 and name not in r.stdout
    assert user.run("down", name).returncode == 0  # idempotent

    # The keeper, idle now, ends by itself (LABCTL_KEEPER_IDLE=1).
    deadline = time.monotonic() + 10
    while user.keeper() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert user.keeper() is None and wait_gone(keeper[0])
    assert root_snapshot() == before
    assert root_ip_json() == before_ip
    assert netns_names() - before_netns == set() or not {n for n in netns_names() if n.startswith(name)}
    assert topo.exists()


def test_a_killed_keeper_takes_its_lab_with_it_and_status_says_so(user):
    name = unique_name("rl")
    user.write("lab.json", routed_lab(name))
    r = user.run("up", "lab.json", "--no-verify")
    assert r.returncode == 0, r.stdout + r.stderr
    st = json.loads(user.run("status", name, "--json").stdout)
    pids = daemon_pids(st)
    pid, start = user.keeper()
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    # Its mount namespace went with it (no labctl process is in it), and with it the
    # mounts that held the lab's namespaces; the daemons ran in its PID namespace (it was
    # their init), so the kernel killed them: nothing holds the lab's namespaces.
    assert pids and all(wait_gone(p) for p in pids)
    r = user.run("status", name)
    assert r.returncode == 0, r.stderr
    assert f"keeper (pid {pid})" in r.stdout and "has ended" in r.stdout, r.stdout
    st = json.loads(user.run("status", name, "--json").stdout)
    assert "keeper_lost" in st and not any(n["present"] for n in st["nodes"]), st
    listed = json.loads(user.run("status", "--json").stdout)
    assert [(lab["name"], lab["state"], "keeper_lost" in lab) for lab in listed] == [(name, "degraded", True)], listed
    r = user.run("down", name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (user.state / name).exists()
    # A new lab of the same name comes up under a new keeper.
    r = user.run("up", "lab.json", "--no-verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert user.keeper()[0] != pid
    assert user.run("down", name).returncode == 0


def test_users_cannot_see_enter_or_remove_each_others_labs(user):
    name = unique_name("rl")
    user.write("lab.json", routed_lab(name, daemon=False))
    assert user.run("up", "lab.json", "--no-verify").returncode == 0
    other = User(OTHER_USER)
    try:
        # Its own state directory: it sees no lab of user's.
        r = other.run("status")
        assert r.returncode == 0 and name not in r.stdout, r.stdout + r.stderr
        # Pointed at user's state directory: refused, user's lab untouched.
        other.env["LABCTL_STATE_DIR"] = str(user.state)
        for args in (["status"], ["exec", name, "h1", "--", "true"], ["down", name], ["down", "--all"]):
            r = other.run(*args)
            assert r.returncode == 3, (args, r.stdout, r.stderr)
            assert str(user.state) in r.stderr, r.stderr
        # Root sees only root's labs.
        r = subprocess.run([LABCTL, "status"], capture_output=True, text=True,
                           env={**os.environ, "LABCTL_STATE_DIR": "/tmp/state-rootless"})
        assert name not in r.stdout
        st = json.loads(user.run("status", name, "--json").stdout)
        assert st["state"] == "up" and all(n["present"] for n in st["nodes"])
        # Root given the user's state directory joins the user's keeper and sees the lab.
        as_root = {**os.environ, "LABCTL_STATE_DIR": str(user.state)}
        r = subprocess.run([LABCTL, "status", name, "--json"], capture_output=True, text=True, env=as_root)
        assert r.returncode == 0 and json.loads(r.stdout)["state"] == "up", r.stdout + r.stderr
        r = subprocess.run([LABCTL, "exec", name, "h1", "--", "ip", "-br", "-4", "addr", "show", "eth0"],
                           capture_output=True, text=True, env=as_root)
        assert r.returncode == 0 and "10.0.1.10/24" in r.stdout, r.stdout + r.stderr
        assert not {n for n in netns_names() if n.startswith(name)}
    finally:
        other.cleanup()
    assert user.run("down", name).returncode == 0


def test_a_state_directory_of_someone_else_or_open_to_others_is_refused(user):
    os.makedirs(user.state, mode=0o755)
    os.chown(user.state, USER, USER)
    os.chmod(user.state, 0o755)
    r = user.run("status")
    assert r.returncode == 3 and "mode 0755" in r.stderr, r.stderr
    os.chown(user.state, 0, 0)
    r = user.run("status")
    assert r.returncode == 3 and "belongs to uid 0" in r.stderr, r.stderr
    os.chmod(user.state, 0o700)
    os.chown(user.state, USER, USER)


def test_the_default_state_directory_of_a_user(user):
    env = dict(user.env)
    del user.env["LABCTL_STATE_DIR"]
    user.env["XDG_RUNTIME_DIR"] = str(user.home)
    try:
        r = user.run("status")
        assert r.returncode == 0, r.stderr
        assert (user.home / "labctl" / ".netns").is_dir()
        assert os.stat(user.home / "labctl").st_mode & 0o777 == 0o700
    finally:
        user.env = env
        user.state = user.home / "labctl"  # cleanup waits for this keeper


def test_a_tap_lab_is_refused_before_anything_is_touched_when_dev_net_tun_is_not_usable(user):
    if os.stat("/dev/net/tun").st_mode & 0o006 == 0o006:
        pytest.fail("/dev/net/tun is usable by everyone here; this test needs it 0600 (as on this machine)")
    name = unique_name("rl")
    doc = routed_lab(name, daemon=False)
    doc["nodes"]["h1"]["interfaces"]["tap0"] = {"type": "tap"}
    user.write("tap.json", doc)
    r = user.run("up", "tap.json")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "/dev/net/tun" in r.stderr and "not usable by uid 65534" in r.stderr, r.stderr
    assert not (user.state / name).exists()
    assert not list((user.state / ".netns").iterdir()) if (user.state / ".netns").exists() else True


@pytest.mark.parametrize("setting,value", [("kernel/unprivileged_userns_clone", "0"),
                                           ("user/max_user_namespaces", "0"),
                                           ("kernel/apparmor_restrict_unprivileged_userns", "1")])
def test_disabled_user_namespaces_exit_3_naming_the_setting(setting, value):
    # /proc/sys is read-only here (even for root), so the host's settings cannot be changed
    # for a test: LABCTL_TEST_SETTINGS_DIR stands for /proc, and with a disabling value
    # there labctl fails to make the user namespace as such a host's kernel makes it fail.
    u = User(USER)
    try:
        fake = u.home / "proc"
        (fake / "sys" / setting).parent.mkdir(parents=True)
        (fake / "sys" / setting).write_text(value + "\n")
        subprocess.run(["chown", "-R", f"{USER}:{USER}", str(fake)], check=True)
        u.env["LABCTL_TEST_SETTINGS_DIR"] = str(fake)
        name = unique_name("rl")
        u.write("lab.json", routed_lab(name, daemon=False))
        sysctl = setting.replace("/", ".") + "=" + value
        for args in (["up", "lab.json"], ["status"], ["exec", name, "h1", "--", "true"], ["down", name]):
            r = u.run(*args)
            assert r.returncode == 3, (args, r.stdout, r.stderr)
            assert sysctl in r.stderr and "disables" in r.stderr, r.stderr
        for call in ("labctl.Lab('lab.json').up()", "labctl.Lab.attach('%s')" % name, "labctl.status()",
                     "labctl.down('%s')" % name):
            r = u.python("import labctl\n"
                         "labctl.validate('lab.json')\n"  # needs no namespace
                         "try:\n    " + call + "\n"
                         "except labctl.LabError as e:\n    print('LabError', e.errno, e)\n")
            assert "LabError 1 " in r.stdout and sysctl in r.stdout, (call, r.stdout + r.stderr)
        doctor = u.run("doctor")
        assert doctor.returncode == 1 and sysctl in doctor.stdout and "NO" in doctor.stdout, doctor.stdout
        assert u.keeper() is None and not (u.state / name).exists()
        # Validating a file needs no namespace.
        assert u.run("validate", "lab.json").returncode == 0
        # With the setting allowing them, the same user's lab comes up.
        why = userns_refused()
        if why:
            pytest.skip(why)
        (fake / "sys" / setting).write_text(("1" if value == "0" else "0") + "\n")
        r = u.run("up", "lab.json", "--no-verify")
        assert r.returncode == 0, r.stdout + r.stderr
        assert u.run("down", name).returncode == 0
    finally:
        u.cleanup()


def test_python_api_as_an_unprivileged_user(user):
    name = unique_name("rl")
    user.write("lab.json", routed_lab(name))
    code = f"""
import json, labctl
assert labctl._core.rootless(), labctl._core.rootless_error()
with labctl.Lab("lab.json") as lab:
    assert lab.is_up
    p = lab.ping("h1", "h2", count=2)
    assert p.ok and p.received >= 1, p
    assert all(c.ok for c in lab.verify(all_pairs=True))
    r = lab.exec("h2", ["ip", "-j", "-4", "addr", "show", "eth0"], check=True)
    assert "10.0.2.10" in r.stdout
    lab.link_down("h1:eth0")
    assert not lab.ping("h1", "h2", count=1, timeout=0.5).ok
    lab.link_up("h1:eth0")
    assert lab.ping("h1", "h2", count=3).ok
    lab.node_restart("h2")
    assert lab.status()["state"] == "up"
    print("attach", labctl.Lab.attach("{name}").is_up)
print("done", labctl.status())
"""
    r = user.python(code)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "attach True" in r.stdout and "done" in r.stdout
    assert not (user.state / name).exists()


def test_pytest_plugin_as_an_unprivileged_user(user):
    user.write("lab.json", routed_lab("rlplug", daemon=False))
    test = user.home / "test_in_lab.py"
    test.write_text(
        "import pytest\n"
        "@pytest.mark.lab('lab.json')\n"
        "def test_routes(lab):\n"
        "    assert lab.ping('h1', 'h2').ok\n"
        "def test_factory(lab_factory):\n"
        "    a = lab_factory({'name': 'rlfact', 'nodes': {'a': {'interfaces': {'e': {'addresses': ['10.9.0.1/24']}}},\n"
        "                     'b': {'interfaces': {'e': {'addresses': ['10.9.0.2/24']}}}},\n"
        "                     'links': [{'endpoints': ['a:e', 'b:e']}]})\n"
        "    assert a.ping('a', 'b').ok\n")
    os.chown(test, USER, USER)
    r = user.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "labctl.pytest_plugin", "test_in_lab.py",
                 cmd=["/usr/bin/python3"], timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout, r.stdout
    r = user.run("status")
    assert r.returncode == 0 and "no labs" in r.stdout, r.stdout


def test_apply_as_an_unprivileged_user(user):
    name = unique_name("rl")
    doc = routed_lab(name, daemon=False)
    user.write("lab.json", doc)
    assert user.run("up", "lab.json", "--no-verify").returncode == 0
    doc["nodes"]["h3"] = {"interfaces": {"eth0": {"addresses": ["10.0.2.11/24"]}},
                          "routes": [{"to": "default", "via": "10.0.2.1"}]}
    doc["nodes"]["r1"]["interfaces"]["eth3"] = {"addresses": ["10.0.3.1/24"]}
    doc["links"].append({"endpoints": ["r1:eth3", "h3:eth0"]})
    doc["nodes"]["h3"]["interfaces"]["eth0"]["addresses"] = ["10.0.3.10/24"]
    doc["nodes"]["h3"]["routes"] = [{"to": "default", "via": "10.0.3.1"}]
    doc["checks"].append({"from": "h3", "to": "h1"})
    user.write("lab2.json", doc)
    r = user.run("apply", "lab2.json", "--dry-run")
    assert r.returncode == 0 and "+ node h3" in r.stdout, r.stdout + r.stderr
    r = user.run("apply", "lab2.json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "+ node h3" in r.stdout and "4 passed, 0 failed" in r.stdout, r.stdout
    r = user.run("impair", name, "h1:eth0", "--rate", "50")
    assert r.returncode == 0, r.stdout + r.stderr
    r = user.run("status", name)
    assert "impaired" in r.stdout, r.stdout
    assert user.run("impair", name, "h1:eth0", "--clear").returncode == 0
    r = user.run("node", name, "h3", "stop")
    assert r.returncode == 0 and "stopped" in user.run("status", name).stdout
    assert user.run("verify", name).returncode == 1  # h3's check fails while it is off
    assert user.run("node", name, "h3", "start").returncode == 0
    assert user.run("verify", name).returncode == 0
    assert user.run("down", name).returncode == 0


def test_a_killed_rootless_up_leaves_nothing_that_down_does_not_remove(user):
    name = unique_name("rl")
    nodes = {"sw": {"kind": "switch"}}
    links = []
    for i in range(1, 61):
        nodes[f"h{i}"] = {"interfaces": {"eth0": {"addresses": [f"10.1.0.{i}/24"]}}}
        links.append({"endpoints": [f"sw:p{i}", f"h{i}:eth0"]})
    user.write("big.json", {"name": name, "nodes": nodes, "links": links})
    assert user.run("status").returncode == 0  # the keeper is there before the kill
    for delay in (0.05, 0.3):
        p = subprocess.Popen(setpriv(USER) + [LABCTL, "up", "big.json", "--no-verify"], env=user.env, cwd=user.home,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.kill()  # our own child (setpriv execs labctl: same pid)
        p.wait()
        r = user.run("down", name)
        assert r.returncode == 0, r.stdout + r.stderr
        assert not (user.state / name).exists()
        assert user.run("exec", name, "h1", "--", "true").returncode != 0
    r = user.run("up", "big.json", "--no-verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert user.run("down", name).returncode == 0


def normalized(text):
    """Output with the numbers that differ between any two runs (times, ids) taken out."""
    import re
    text = re.sub(r"\d+\.\d+", "T", text)
    return re.sub(r"/tmp/\S+", "PATH", text)


def test_same_output_and_exit_codes_as_root_mode(user, tmp_path):
    """The same lab up twice at once, as root (in /run/netns) and as the user (in its
    keeper): their namespace names do not meet, and every command answers the same."""
    name = unique_name("rl")
    doc = routed_lab(name, daemon=False)
    user.write("lab.json", doc)
    root_file = tmp_path / "lab.json"
    root_file.write_text(json.dumps(doc))
    root_env = {**os.environ, "LABCTL_STATE_DIR": str(tmp_path / "state")}

    def as_root(*args):
        return subprocess.run([LABCTL, *map(str, args)], capture_output=True, text=True, env=root_env, cwd=tmp_path)

    try:
        for args in (["up", "lab.json"], ["verify", name], ["verify", name, "--all-pairs"],
                     ["ping", name, "h1", "h2", "-c", "1"], ["ping", name, "h1", "203.0.113.9", "-c", "1", "-W", "1"],
                     ["exec", name, "h1", "--", "sh", "-c", "ip -br -4 addr show eth0; exit 5"],
                     ["link", name, "h1:eth0", "down"], ["verify", name], ["link", name, "h1:eth0", "up"],
                     ["exec", name, "h1", "--", "no-such-program"], ["up", "lab.json"],
                     ["validate", "lab.json"], ["down", name], ["down", name]):
            a, b = as_root(*args), user.run(*args)
            assert a.returncode == b.returncode, (args, a.stdout + a.stderr, b.stdout + b.stderr)
            assert normalized(a.stdout) == normalized(b.stdout), (args, a.stdout, b.stdout)
            assert normalized(a.stderr) == normalized(b.stderr), (args, a.stderr, b.stderr)
    finally:
        as_root("down", name)


def test_a_node_user_is_refused_before_anything_is_touched(user):
    name = unique_name("rl")
    doc = routed_lab(name, daemon=False)
    doc["nodes"]["h1"]["user"] = "nobody"
    doc["nodes"]["h1"]["exec"] = [["id", "-u"]]
    user.write("lab.json", doc)
    r = user.run("up", "lab.json")
    assert r.returncode == 3, r.stdout + r.stderr
    assert 'node h1 runs as user "nobody"' in r.stderr and "rootless" in r.stderr, r.stderr
    assert not (user.state / name).exists()
    del doc["nodes"]["h1"]["user"]  # commands run as root inside: the caller outside
    user.write("lab.json", doc)
    r = user.run("up", "lab.json", "--no-verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert user.run("down", name).returncode == 0


def test_concurrent_first_commands_start_one_keeper_and_both_labs_come_up(user):
    """Four commands of one user at once, no keeper yet: the spawn lock lets one start it,
    the others join it; two labs come up side by side in it."""
    names = [unique_name("rl"), unique_name("rl")]
    for i, name in enumerate(names):
        doc = routed_lab(name, daemon=False)
        user.write(f"lab{i}.json", doc)
    procs = [subprocess.Popen(setpriv(USER) + [LABCTL, *args], env=user.env, cwd=user.home, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for args in (["up", "lab0.json"], ["up", "lab1.json"], ["status"], ["status"])]
    outs = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert all(rc == 0 for _, _, rc in outs), outs
    keeper = user.keeper()
    st = [json.loads(user.run("status", n, "--json").stdout) for n in names]
    assert all(s["state"] == "up" and "keeper_lost" not in s for s in st), st
    # One keeper: every lab's recorded keeper is the one running.
    assert {(user.state / n / "keeper").read_text().split()[0] for n in names} == {str(keeper[0])}
    for n in names:
        assert user.run("down", n).returncode == 0
