"""Safety (issue 14): labctl never removes or kills what it did not make, whatever the
timing, the name or the kill; node commands get nothing of the caller's.

Timing is made deterministic with strace's fault injection (a SIGSTOP or SIGKILL at a
chosen system call) and polling, never with sleeps that hope. Labs that must share a
name with something else use a private LABCTL_STATE_DIR; everything else gets a unique
name (labfix.unique_name).
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import LABCTL, run_labctl
from labfix import lab_namespaces, netns_list, unique_name

STRACE = shutil.which("strace")
needs_strace = pytest.mark.skipif(STRACE is None, reason="strace (Debian package) is not installed")


# ---- helpers ---------------------------------------------------------------------------------

def env_with(state_dir=None, **extra):
    env = dict(os.environ)
    if state_dir is not None:
        env["LABCTL_STATE_DIR"] = str(state_dir)
    env.update(extra)
    return env


def private_state_dir():
    d = tempfile.mkdtemp(prefix="labctl-safety-")
    os.rmdir(d)  # labctl makes it (mode 0700)
    return d


def ns_inode(name):
    return os.stat(f"/run/netns/{name}").st_ino


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def proc_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def wait_for(predicate, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def pids_in_netns_of(path):
    """Processes whose network namespace is the one mounted (or held) at `path`."""
    st = os.stat(path)
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            s = os.stat(f"/proc/{p}/ns/net")
        except OSError:
            continue
        if (s.st_dev, s.st_ino) == (st.st_dev, st.st_ino):
            out.append(int(p))
    return out


def running_in(netns_path, argv):
    """Processes in the namespace at `netns_path` whose command line is `argv`."""
    out = []
    for pid in pids_in_netns_of(netns_path):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[:-1] == argv:
                    out.append(pid)
        except OSError:
            continue
    return out


def mounted_at(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def hosts(names, **node_extra):
    """Unconnected hosts (no links, no checks): the cheapest lab of N namespaces."""
    doc = {"nodes": {n: {} for n in names}}
    for node, extra in node_extra.items():
        doc["nodes"][node] = dict(extra)
    return doc


def write(tmp_path, doc, name):
    doc = dict(doc, name=name)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


def remove_netns(*names):
    for n in names:
        subprocess.run(["ip", "netns", "del", n], capture_output=True)


def held_before_first(syscall, argv, env, trace, ready):
    """Starts argv under strace, its first `syscall` held back at entry (strace's
    delay_enter, 5 s: a ptrace stop, no job control involved) once `ready()` says it
    got that far. Returns the strace Popen; `still_held(trace)` tells whether the call
    has not run yet, which the caller asserts after doing its work meanwhile (so the
    order is checked, never hoped for)."""
    p = subprocess.Popen([STRACE, "-f", "-qq", "-o", str(trace), "-e", f"trace={syscall}",
                          "-e", f"inject={syscall}:delay_enter=5000000:when=1", *argv],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def got_there():
        if p.poll() is not None:
            raise AssertionError("exited early: " + p.stderr.read())
        return ready()
    wait_for(got_there, f"{argv} to get as far as {syscall}")
    return p


def still_held(trace, syscall="unshare"):
    return not any(f"{syscall}(" in line and "= " in line for line in trace.read_text().splitlines()) \
        if trace.exists() else True


def stop_started(p):
    """A failed test leaves nothing running: the labctl under strace that it started
    (SIGKILL reaches a traced process too), then strace."""
    if p is not None and p.poll() is None:
        try:
            for kid in open(f"/proc/{p.pid}/task/{p.pid}/children").read().split():
                os.kill(int(kid), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass
        p.kill()
        p.wait()


# ---- High 1: identities, not names ------------------------------------------------------

@needs_strace
def test_rollback_of_a_lab_that_lost_a_name_spares_the_other_lab(tmp_path):
    """Lab `X-r` (nodes a, s) is stopped after its checks, before it made anything; lab `X`
    (node r-s, with a daemon) comes up; `X-r` resumes, finds `X-r-s` taken, and rolls back:
    it names lab X, removes only its own namespaces, and X's namespace and daemon live on."""
    short = unique_name("sq")[:13]
    other = short + "-r"
    state = private_state_dir()
    env = env_with(state)
    first = write(tmp_path, hosts(["a", "s"]), other)
    second = write(tmp_path, hosts(["r-s"], **{"r-s": {"daemons": [["sleep", "300"]]}}), short)
    p = None
    try:
        trace = tmp_path / "trace"
        p = held_before_first("unshare", [LABCTL, "up", str(first), "--no-verify"], env, trace,
                              lambda: os.path.exists(os.path.join(state, other, "journal")))
        r = run_labctl("up", second, "--no-verify", env=env)
        assert r.returncode == 0, r.stderr
        shared = f"{short}-r-s"
        inode = ns_inode(shared)
        daemons = pids_in_netns_of(f"/run/netns/{shared}")
        assert len(daemons) == 1
        assert still_held(trace), "the winner came up too late for this test (machine too slow?)"
        out, err = p.communicate(timeout=120)
        assert p.returncode == 3, err
        assert shared in err and f"belongs to lab {short} " in err, err
        assert ns_inode(shared) == inode
        assert all(alive(pid) for pid in daemons)
        assert lab_namespaces(other) == [shared]
        assert not os.path.lexists(os.path.join(state, other))
        s = run_labctl("status", "--json", env=env)
        assert [lab["name"] for lab in json.loads(s.stdout)] == [short]
    finally:
        stop_started(p)
        run_labctl("down", "--all", env=env)
        remove_netns(f"{other}-a", f"{other}-s", f"{short}-r-s")
        shutil.rmtree(state, ignore_errors=True)


@needs_strace
def test_one_lab_name_in_two_state_dirs_the_loser_removes_only_its_own(tmp_path):
    """The same lab from two state directories at once: the one stopped before making
    anything loses every name to the other, and removes none of the winner's."""
    name = unique_name("sw")
    doc = hosts([f"h{i}" for i in range(8)], h7={"daemons": [["sleep", "300"]]})
    path = write(tmp_path, doc, name)
    loser_state, winner_state = private_state_dir(), private_state_dir()
    p = None
    try:
        trace = tmp_path / "trace"
        p = held_before_first("unshare", [LABCTL, "up", str(path), "--no-verify"], env_with(loser_state), trace,
                              lambda: os.path.exists(os.path.join(loser_state, name, "journal")))
        r = run_labctl("up", path, "--no-verify", env=env_with(winner_state))
        assert r.returncode == 0, r.stderr
        inodes = {n: ns_inode(n) for n in lab_namespaces(name)}
        assert len(inodes) == 8
        daemon = pids_in_netns_of(f"/run/netns/{name}-h7")
        assert still_held(trace), "the winner came up too late for this test (machine too slow?)"
        out, err = p.communicate(timeout=120)
        assert p.returncode == 3, err
        assert "already exists" in err, err
        assert {n: ns_inode(n) for n in lab_namespaces(name)} == inodes
        assert daemon and all(alive(pid) for pid in daemon)
        assert not os.path.lexists(os.path.join(loser_state, name))
        assert run_labctl("down", name, env=env_with(winner_state)).returncode == 0
        assert lab_namespaces(name) == []
    finally:
        stop_started(p)
        run_labctl("down", "--all", env=env_with(winner_state))
        run_labctl("down", "--all", env=env_with(loser_state))
        remove_netns(*[f"{name}-h{i}" for i in range(8)])
        shutil.rmtree(loser_state, ignore_errors=True)
        shutil.rmtree(winner_state, ignore_errors=True)


@needs_strace
def test_down_after_a_killed_up_spares_a_namespace_someone_made_later(tmp_path):
    """`up` SIGKILLed at its third unshare; then someone makes `<lab>-h5` and runs a
    process in it: `down` removes the lab's namespaces and leaves that one and its process."""
    state = private_state_dir()
    env = env_with(state)
    name = unique_name("sk")
    path = write(tmp_path, hosts([f"h{i}" for i in range(1, 7)]), name)
    stranger = f"{name}-h5"
    proc = None
    try:
        r = subprocess.run([STRACE, "-f", "-qq", "-o", "/dev/null", "-e", "trace=unshare",
                            "-e", "inject=unshare:signal=SIGKILL:when=3", LABCTL, "up", str(path), "--no-verify"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode != 0
        subprocess.run(["ip", "netns", "add", stranger], check=True)
        proc = subprocess.Popen(["ip", "netns", "exec", stranger, "sleep", "300"])
        wait_for(lambda: pids_in_netns_of(f"/run/netns/{stranger}"), "the stranger's process")
        inode = ns_inode(stranger)
        r = run_labctl("down", name, env=env)
        assert r.returncode == 0, r.stderr
        assert lab_namespaces(name) == [stranger]
        assert ns_inode(stranger) == inode
        assert proc.poll() is None
        assert not os.path.lexists(os.path.join(state, name))
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        remove_netns(*[f"{name}-h{i}" for i in range(1, 7)])
        run_labctl("down", "--all", env=env)
        shutil.rmtree(state, ignore_errors=True)


@needs_strace
def test_symlink_at_a_lab_name_is_never_followed(tmp_path):
    """After an `up` killed before its first namespace, a symlink `<lab>-h1` pointing at
    another namespace's mount: `down` neither unmounts nor removes anything, and `up` is
    refused naming the symlinked name."""
    state = private_state_dir()
    env = env_with(state)
    name = unique_name("sl")
    victim = unique_name("victim")
    path = write(tmp_path, hosts(["h1", "h2"]), name)
    link = f"/run/netns/{name}-h1"
    try:
        subprocess.run(["ip", "netns", "add", victim], check=True)
        r = subprocess.run([STRACE, "-f", "-qq", "-o", "/dev/null", "-e", "trace=unshare",
                            "-e", "inject=unshare:signal=SIGKILL:when=1", LABCTL, "up", str(path), "--no-verify"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode != 0
        os.symlink(f"/run/netns/{victim}", link)
        r = run_labctl("down", name, env=env)
        assert r.returncode == 0, r.stderr
        assert os.path.islink(link)
        assert mounted_at(f"/run/netns/{victim}")
        r = run_labctl("up", path, "--no-verify", env=env)
        assert r.returncode == 3 and f"{name}-h1" in r.stderr, r.stderr
        assert os.path.islink(link) and mounted_at(f"/run/netns/{victim}")
        assert lab_namespaces(name) == [f"{name}-h1"]
    finally:
        if os.path.islink(link):
            os.unlink(link)
        remove_netns(victim, f"{name}-h1", f"{name}-h2")
        run_labctl("down", "--all", env=env)
        shutil.rmtree(state, ignore_errors=True)


def test_names_that_meet_are_refused_naming_the_other_lab(tmp_path):
    """Lab `X` (node `b-c`) is up; lab `X-b` (node `c`) would make the same namespace:
    refused before anything is touched, naming lab X."""
    short = unique_name("sm")[:13]
    state = private_state_dir()
    env = env_with(state)
    try:
        assert run_labctl("up", write(tmp_path, hosts(["b-c"]), short), "--no-verify", env=env).returncode == 0
        r = run_labctl("up", write(tmp_path, hosts(["a", "c"]), short + "-b"), "--no-verify", env=env)
        assert r.returncode == 3, r.stderr
        assert f"belongs to lab {short} " in r.stderr, r.stderr
        assert lab_namespaces(short + "-b") == [f"{short}-b-c"]
        assert not os.path.lexists(os.path.join(state, short + "-b"))
    finally:
        run_labctl("down", "--all", env=env)
        remove_netns(f"{short}-b-c", f"{short}-b-a")
        shutil.rmtree(state, ignore_errors=True)


# ---- High 2: no lab name reaches labctl's own files -------------------------------------------

def test_a_lab_named_locks_is_just_a_lab(tmp_path):
    """A lab called `locks` (once the lock directory): another lab's lock file survives its
    up and down, and `status` and `down --all` see it."""
    state = private_state_dir()
    env = env_with(state)
    node = unique_name("n")
    other = unique_name("lk")
    try:
        assert run_labctl("up", write(tmp_path, hosts(["h1"]), other), "--no-verify", env=env).returncode == 0
        locks = [os.path.join(d, f) for d, _, fs in os.walk(state) for f in fs if f == f"{other}.lock"]
        assert len(locks) == 1
        lock_inode = os.stat(locks[0]).st_ino
        assert run_labctl("up", write(tmp_path, hosts([node]), "locks"), "--no-verify", env=env).returncode == 0
        names = [lab["name"] for lab in json.loads(run_labctl("status", "--json", env=env).stdout)]
        assert sorted(names) == sorted([other, "locks"])
        assert run_labctl("down", "locks", env=env).returncode == 0
        assert os.stat(locks[0]).st_ino == lock_inode
        assert run_labctl("up", write(tmp_path, hosts([node]), "locks"), "--no-verify", env=env).returncode == 0
        r = run_labctl("down", "--all", env=env)
        assert r.returncode == 0 and "removed 2 lab(s)" in r.stdout, r.stdout
        assert lab_namespaces("locks") == [] and lab_namespaces(other) == []
    finally:
        run_labctl("down", "--all", env=env)
        remove_netns(f"locks-{node}", f"{other}-h1")
        shutil.rmtree(state, ignore_errors=True)


# ---- High 3: node commands get a clean environment, and a user ---------------------------------

def shared_dir():
    """A folder every user may enter (pytest's tmp_path is root's alone)."""
    d = tempfile.mkdtemp(prefix="labctl-safety-")
    os.chmod(d, 0o755)
    return d


def exec_log(state, name, node, i=0):
    with open(os.path.join(state, name, "logs", f"{node}.exec.{i}.log")) as f:
        return f.read()


def test_node_commands_get_a_clean_environment_and_run_in_the_files_folder(tmp_path):
    state = private_state_dir()
    env = env_with(state, GRADER_SECRET="s3cret", LANG="xx_YY")
    name = unique_name("se")
    folder = shared_dir()
    try:
        with open(os.path.join(folder, "hello.sh"), "w") as f:
            f.write("#!/bin/sh\necho hello from $(pwd)\n")
        os.chmod(os.path.join(folder, "hello.sh"), 0o755)
        doc = hosts(["h1"], h1={"env": {"MODE": "lab", "PATH": "/usr/bin:/bin"},
                                "exec": [["env"], ["./hello.sh"]],
                                "daemons": [["sh", "-c", "env; exec sleep 300"]]})
        path = os.path.join(folder, "topo.json")
        with open(path, "w") as f:
            json.dump(dict(doc, name=name), f)
        r = run_labctl("up", path, "--no-verify", env=env)
        assert r.returncode == 0, r.stderr
        seen = dict(line.split("=", 1) for line in exec_log(state, name, "h1").splitlines() if "=" in line)
        assert "GRADER_SECRET" not in seen and "LABCTL_STATE_DIR" not in seen
        assert seen["MODE"] == "lab" and seen["PATH"] == "/usr/bin:/bin"
        assert seen["HOME"] == "/root" and seen["LANG"] == "C.UTF-8"
        assert exec_log(state, name, "h1", 1) == f"hello from {folder}\n"
        # The daemon's shell runs `env` in a child, then execs sleep: its environment is
        # read once sleep runs (mid-exec, or from an exiting child, it reads empty).
        netns = f"/run/netns/{name}-h1"
        wait_for(lambda: running_in(netns, [b"sleep", b"300"]), "the daemon's sleep")
        with open(f"/proc/{running_in(netns, [b'sleep', b'300'])[0]}/environ", "rb") as f:
            denv = f.read().split(b"\0")
        assert b"MODE=lab" in denv and not any(e.startswith(b"GRADER_SECRET") for e in denv)
        # labctl exec is the caller's own command: it keeps the caller's environment.
        r = run_labctl("exec", name, "h1", "--", "sh", "-c", "echo $GRADER_SECRET", env=env)
        assert r.stdout == "s3cret\n"
    finally:
        run_labctl("down", "--all", env=env)
        remove_netns(f"{name}-h1")
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_node_user_runs_exec_and_daemons_without_root_privileges(tmp_path):
    state = private_state_dir()
    env = env_with(state)
    name = unique_name("su")
    folder = shared_dir()
    try:
        status = "grep -E '^(Uid|Gid|CapEff|CapPrm):' /proc/self/status"
        doc = hosts(["h1", "h2"],
                    h1={"user": "nobody", "exec": [status, ["ip", "link", "add", "d0", "type", "dummy"]]},
                    h2={"user": 65534, "daemons": [["sleep", "300"]]})
        path = os.path.join(folder, "topo.json")
        with open(path, "w") as f:
            json.dump(dict(doc, name=name), f)
        r = run_labctl("up", path, "--no-verify", env=env)
        # The second command needs CAP_NET_ADMIN, which the user does not have.
        assert r.returncode == 3, r.stderr
        assert "h1: exec \"ip link add d0 type dummy\" exited with 2" in r.stderr, r.stderr
        assert lab_namespaces(name) == []
        doc["nodes"]["h1"]["exec"] = [status]
        with open(path, "w") as f:
            json.dump(dict(doc, name=name), f)
        r = run_labctl("up", path, "--no-verify", env=env)
        assert r.returncode == 0, r.stderr
        fields = dict(line.split(":", 1) for line in exec_log(state, name, "h1").splitlines())
        assert fields["Uid"].split() == ["65534"] * 4
        assert fields["Gid"].split()[0] == "65534"
        assert int(fields["CapEff"], 16) == 0 and int(fields["CapPrm"], 16) == 0
        daemon = pids_in_netns_of(f"/run/netns/{name}-h2")
        assert len(daemon) == 1 and os.stat(f"/proc/{daemon[0]}").st_uid == 65534
        assert run_labctl("down", name, env=env).returncode == 0
        assert not alive(daemon[0])
    finally:
        run_labctl("down", "--all", env=env)
        remove_netns(f"{name}-h1", f"{name}-h2")
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_unknown_user_is_a_validation_error(tmp_path):
    name = unique_name("sv")
    path = write(tmp_path, hosts(["h1"], h1={"user": "no-such-user-here"}), name)
    r = run_labctl("validate", path)
    assert r.returncode == 2 and "/nodes/h1/user" in r.stderr and "no user" in r.stderr, r.stderr
    path = write(tmp_path, hosts(["h1"], h1={"env": {"A=B": "x"}}), name)
    r = run_labctl("validate", path)
    assert r.returncode == 2 and "'env'" in r.stderr, r.stderr


def test_up_under_an_empty_environment(tmp_path):
    """`env -i`: labctl itself has no PATH, HOME or anything; node commands still get
    theirs (and Boost.Process's environment lookup, which read past its buffer on a small
    environment, is never used)."""
    state = private_state_dir()
    name = unique_name("sn")
    path = write(tmp_path, hosts(["h1"], h1={"exec": [["env"], "echo ok"]}), name)
    try:
        r = subprocess.run(["env", "-i", f"LABCTL_STATE_DIR={state}", LABCTL, "up", str(path), "--no-verify"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        seen = exec_log(state, name, "h1")
        assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n" in seen
        assert "LABCTL_STATE_DIR" not in seen
        assert exec_log(state, name, "h1", 1) == "ok\n"
        r = subprocess.run(["env", "-i", f"LABCTL_STATE_DIR={state}", LABCTL, "down", name],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    finally:
        run_labctl("down", "--all", env=env_with(state))
        remove_netns(f"{name}-h1")
        shutil.rmtree(state, ignore_errors=True)


# ---- Medium 4: the topology is read once ------------------------------------------------------

def test_topology_is_read_once_and_attach_checks_the_saved_name(tmp_path):
    """A FIFO is refused at once (never read, never hangs); the state directory holds exactly
    what was validated; a saved copy naming another lab is refused by attach (status)."""
    state = private_state_dir()
    env = env_with(state)
    name = unique_name("sr")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    try:
        r = run_labctl("up", fifo, "--no-verify", env=env, timeout=20)
        assert r.returncode == 2 and "not a regular file" in r.stderr, r.stderr
        path = write(tmp_path, hosts(["h1"]), name)
        text = path.read_text()
        assert run_labctl("up", path, "--no-verify", env=env).returncode == 0
        with open(os.path.join(state, name, "topology.json")) as f:
            assert f.read() == text
        other = unique_name("so")
        with open(os.path.join(state, name, "topology.json"), "w") as f:
            json.dump(dict(hosts(["h1"]), name=other), f)
        r = run_labctl("status", name, env=env)
        assert r.returncode == 3 and f"lab {other}'s" in r.stderr, r.stdout + r.stderr
        assert run_labctl("down", name, env=env).returncode == 0
        assert lab_namespaces(name) == []
    finally:
        run_labctl("down", "--all", env=env)
        remove_netns(f"{name}-h1")
        shutil.rmtree(state, ignore_errors=True)


# ---- Medium 5: exit 3 means nothing is left ------------------------------------------------------

@needs_strace
def test_full_disk_at_the_last_journal_record_removes_the_lab(tmp_path):
    """ENOSPC on the journal's last record ("up"): exit 3 and nothing left."""
    state = private_state_dir()
    env = env_with(state)
    name = unique_name("sd")
    path = write(tmp_path, hosts(["h1"]), name)
    journal = os.path.join(state, name, "journal")
    trace = tmp_path / "trace"
    try:
        # The last record ("up") is the main thread's last write to the journal; strace
        # counts injections per thread, so count the main thread's writes in a first run.
        r = subprocess.run([STRACE, "-f", "-qq", "-o", str(trace), "-P", journal, "-e", "trace=write",
                            LABCTL, "up", str(path), "--no-verify"], capture_output=True, text=True, env=env,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert run_labctl("down", name, env=env).returncode == 0
        lines = [line.split() for line in trace.read_text().splitlines() if " write(" in line]
        main = lines[0][0]  # the "begin" record: the main thread
        last = sum(1 for line in lines if line[0] == main)
        r = subprocess.run([STRACE, "-f", "-qq", "-o", "/dev/null", "-P", journal, "-e", "trace=write",
                            "-e", f"inject=write:error=ENOSPC:when={last}", LABCTL, "up", str(path), "--no-verify"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 3, r.stderr
        assert "No space left on device" in r.stderr, r.stderr
        assert lab_namespaces(name) == []
        assert not os.path.lexists(os.path.join(state, name))
    finally:
        run_labctl("down", "--all", env=env)
        remove_netns(f"{name}-h1")
        shutil.rmtree(state, ignore_errors=True)


def test_checks_that_need_more_sockets_than_the_fd_limit_run_in_waves(tmp_path):
    """A lab whose checks need more sockets at once than RLIMIT_NOFILE allows (598 ICMP
    sockets and 299 namespaces under 800 fds): up builds within a bounded number of fds
    and the checks run in waves that fit, every one of them passing, in file order. A
    limit below what building holds at once is refused before anything is touched."""
    state = private_state_dir()
    env = env_with(state)
    name = unique_name("sf")
    n = 300
    doc = {"nodes": {"sw": {"kind": "switch"}}, "links": [], "checks": []}
    for i in range(1, n):
        doc["nodes"][f"h{i}"] = {"interfaces": {"eth0": {"addresses": [f"10.20.{i // 250}.{i % 250 + 1}/16"]}}}
        doc["links"].append({"endpoints": [f"sw:p{i}", f"h{i}:eth0"]})
    for i in range(1, n):
        doc["checks"].append({"from": f"h{i}:eth0", "to": f"h{i % (n - 1) + 1}", "count": 1})
        doc["checks"].append({"from": f"h{i}", "to": f"h{(i + 1) % (n - 1) + 1}", "count": 1})
    path = write(tmp_path, doc, name)
    try:
        # Below what building holds at once: refused before anything is touched.
        r = subprocess.run(["prlimit", "--nofile=200:200", LABCTL, "up", str(path)],
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 3, r.stderr
        assert "RLIMIT_NOFILE" in r.stderr and "Nothing was touched" in r.stderr, r.stderr
        assert lab_namespaces(name) == []
        assert not os.path.lexists(os.path.join(state, name))
        r = subprocess.run(["prlimit", "--nofile=800:800", LABCTL, "up", str(path), "--json"],
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        checks = json.loads(r.stdout)["checks"]
        assert len(checks) == 2 * (n - 1) and all(c["ok"] for c in checks), r.stdout
        assert [c["src"] for c in checks[:4]] == ["h1:eth0", "h1", "h2:eth0", "h2"]
        assert run_labctl("down", name, env=env).returncode == 0
        assert lab_namespaces(name) == []
        assert not os.path.lexists(os.path.join(state, name))
    finally:
        run_labctl("down", "--all", env=env)
        shutil.rmtree(state, ignore_errors=True)


# ---- Medium 6: an interrupted down is finished by the next ------------------------------------------

@needs_strace
def test_down_killed_at_an_unlink_is_finished_by_the_next_down(tmp_path):
    state = private_state_dir()
    env = env_with(state)
    name = unique_name("sx")
    path = write(tmp_path, hosts([f"h{i}" for i in range(6)]), name)
    try:
        assert run_labctl("up", path, "--no-verify", env=env).returncode == 0
        r = subprocess.run([STRACE, "-f", "-qq", "-o", "/dev/null", "-e", "trace=unlink,unlinkat",
                            "-e", "inject=unlink,unlinkat:signal=SIGKILL:when=2", LABCTL, "down", name],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode != 0
        assert lab_namespaces(name) != [] or any(f.startswith(name + "-") for f in os.listdir("/run/netns"))
        r = run_labctl("down", name, env=env)
        assert r.returncode == 0, r.stderr
        assert [f for f in os.listdir("/run/netns") if f.startswith(name + "-")] == []
        assert not os.path.lexists(os.path.join(state, name))
        assert run_labctl("up", path, "--no-verify", env=env).returncode == 0
        assert run_labctl("down", name, env=env).returncode == 0
    finally:
        run_labctl("down", "--all", env=env)
        remove_netns(*[f"{name}-h{i}" for i in range(6)])
        shutil.rmtree(state, ignore_errors=True)


# ---- Medium 7 and Low 9: down stops every process of the lab --------------------------------------

FORK_ON_TERM = ("import os, signal, time\n"
                "signal.signal(signal.SIGTERM, lambda *a: os.fork())\n"
                "while True: time.sleep(1)\n")


def test_down_outlasts_a_daemon_that_forks_on_sigterm(tmp_path):
    state = private_state_dir()
    env = env_with(state)
    name = unique_name("sy")
    path = write(tmp_path, hosts(["h1"], h1={"daemons": [["/usr/bin/python3", "-c", FORK_ON_TERM]]}), name)
    try:
        assert run_labctl("up", path, "--no-verify", env=env).returncode == 0
        st = os.stat(f"/run/netns/{name}-h1")
        daemon = pids_in_netns_of(f"/run/netns/{name}-h1")
        assert len(daemon) == 1

        def catches_sigterm():
            with open(f"/proc/{daemon[0]}/status") as f:
                caught = [line for line in f if line.startswith("SigCgt:")][0].split()[1]
            return int(caught, 16) & (1 << (signal.SIGTERM - 1))
        wait_for(catches_sigterm, "the daemon to catch SIGTERM")
        r = run_labctl("down", name, env=env, timeout=120)
        assert r.returncode == 0, r.stderr

        def in_lab():
            out = []
            for p in os.listdir("/proc"):
                if p.isdigit():
                    try:
                        s = os.stat(f"/proc/{p}/ns/net")
                    except OSError:
                        continue
                    if (s.st_dev, s.st_ino) == (st.st_dev, st.st_ino):
                        out.append(p)
            return out
        assert in_lab() == []
    finally:
        run_labctl("down", "--all", env=env)
        remove_netns(f"{name}-h1")
        shutil.rmtree(state, ignore_errors=True)


def test_down_finds_processes_of_a_namespace_deleted_behind_its_back(tmp_path):
    """`ip netns del` behind labctl's back, an exec'd process left in the background:
    `down` finds it through /proc (by the namespace's recorded identity) and stops it."""
    state = private_state_dir()
    env = env_with(state)
    name = unique_name("sz")
    path = write(tmp_path, hosts(["h1"], h1={"exec": ["sleep 300 >/dev/null 2>&1 &"]}), name)
    try:
        assert run_labctl("up", path, "--no-verify", env=env).returncode == 0
        left = pids_in_netns_of(f"/run/netns/{name}-h1")
        assert len(left) == 1
        subprocess.run(["ip", "netns", "del", f"{name}-h1"], check=True)
        r = run_labctl("down", name, env=env)
        assert r.returncode == 0, r.stderr
        assert not alive(left[0])
        assert not os.path.lexists(os.path.join(state, name))
    finally:
        run_labctl("down", "--all", env=env)
        remove_netns(f"{name}-h1")
        shutil.rmtree(state, ignore_errors=True)


def test_stubborn_daemons_share_one_grace(tmp_path):
    """Six daemons that ignore SIGTERM: stopped together, one 2 s grace for all (stopped one
    after another, it took 2 s each)."""
    state = private_state_dir()
    env = env_with(state)
    name = unique_name("sg")
    stubborn = ["sh", "-c", "trap '' TERM; while :; do sleep 1; done"]
    path = write(tmp_path, hosts([f"h{i}" for i in range(6)],
                                 **{f"h{i}": {"daemons": [stubborn]} for i in range(6)}), name)
    try:
        assert run_labctl("up", path, "--no-verify", env=env).returncode == 0
        t0 = time.monotonic()
        r = run_labctl("down", name, env=env, timeout=120)
        took = time.monotonic() - t0
        assert r.returncode == 0, r.stderr
        assert took < 6, f"down took {took:.1f} s"
    finally:
        run_labctl("down", "--all", env=env)
        remove_netns(*[f"{name}-h{i}" for i in range(6)])
        shutil.rmtree(state, ignore_errors=True)


# ---- Low 10-12: exec commands during up ----------------------------------------------------------

def wait_for_process_in(netns_path, what):
    wait_for(lambda: os.path.exists(netns_path) and pids_in_netns_of(netns_path), what)


def test_ctrl_c_during_exec_stops_it_and_rolls_back_at_once(tmp_path):
    state = private_state_dir()
    env = env_with(state)
    name = unique_name("si")
    path = write(tmp_path, hosts(["h1", "h2", "h3"], **{f"h{i}": {"exec": [["sleep", "8"]]} for i in (1, 2, 3)}), name)
    try:
        p = subprocess.Popen([LABCTL, "up", str(path), "--no-verify"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        wait_for_process_in(f"/run/netns/{name}-h1", "the first exec")
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        took = time.monotonic() - t0
        assert p.returncode == 3, err
        assert took < 2, f"took {took:.1f} s"
        assert lab_namespaces(name) == []
        assert not os.path.lexists(os.path.join(state, name))
    finally:
        run_labctl("down", "--all", env=env)
        remove_netns(*[f"{name}-h{i}" for i in (1, 2, 3)])
        shutil.rmtree(state, ignore_errors=True)


def test_exec_output_is_bounded_in_memory_and_log(tmp_path):
    state = private_state_dir()
    env = env_with(state)
    name = unique_name("sb")
    path = write(tmp_path, hosts(["h1"], h1={"exec": ["head -c 200000000 /dev/zero; echo; echo the end"]}), name)
    try:
        p = subprocess.Popen(["/usr/bin/time", "-f", "%M", LABCTL, "up", str(path), "--no-verify"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        max_rss_kib = int(err.strip().splitlines()[-1])
        assert max_rss_kib < 100 * 1024, max_rss_kib
        log = os.path.join(state, name, "logs", "h1.exec.0.log")
        assert os.path.getsize(log) < 4 << 20
        with open(log, "rb") as f:
            data = f.read()
        assert data.startswith(b"[labctl: the first ") and data.endswith(b"the end\n")
    finally:
        run_labctl("down", "--all", env=env)
        remove_netns(f"{name}-h1")
        shutil.rmtree(state, ignore_errors=True)


SIGSTOP_SCRIPT = r"""
import json, sys, labctl
lab = labctl.Lab.attach(sys.argv[1])
try:
    r = lab.exec("h1", ["sleep", "0.3"], timeout=1.0)
    print(json.dumps({"rc": r.returncode, "timed_out": False}))
except labctl.ExecTimeout:
    print(json.dumps({"rc": None, "timed_out": True}))
"""


def test_a_command_that_finished_while_we_were_stopped_did_not_time_out(tmp_path):
    """The caller is stopped (SIGSTOP) while its command runs, past the timeout: the
    command had exited by then, so it did not time out."""
    state = private_state_dir()
    env = env_with(state)
    name = unique_name("st")
    path = write(tmp_path, hosts(["h1"]), name)
    try:
        assert run_labctl("up", path, "--no-verify", env=env).returncode == 0
        import labctl  # noqa: F401  (PYTHONPATH names the build's module)
        p = subprocess.Popen(["/usr/bin/python3", "-c", SIGSTOP_SCRIPT, name], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        netns = f"/run/netns/{name}-h1"
        wait_for_process_in(netns, "the sleep")
        sleeper = pids_in_netns_of(netns)[0]
        os.kill(p.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        wait_for(lambda: not alive(sleeper), "the sleep to finish")
        wait_for(lambda: time.monotonic() - t0 > 1.5, "the timeout to pass")
        os.kill(p.pid, signal.SIGCONT)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert json.loads(out) == {"rc": 0, "timed_out": False}
    finally:
        run_labctl("down", "--all", env=env)
        remove_netns(f"{name}-h1")
        shutil.rmtree(state, ignore_errors=True)


# ---- Low 13-16 --------------------------------------------------------------------------------

@needs_strace
def test_probe_killed_leaves_no_namespace(tmp_path):
    """SIGKILL while the kernel features are probed (`doctor`): no `labctl-probe-*` left."""
    before = {n for n in netns_list() if n.startswith("labctl-probe-")}
    r = subprocess.run([STRACE, "-f", "-qq", "-o", "/dev/null", "-e", "trace=sendto,sendmsg",
                        "-e", "inject=sendto,sendmsg:signal=SIGKILL:when=1", LABCTL, "doctor"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    after = {n for n in netns_list() if n.startswith("labctl-probe-")}
    try:
        assert after - before == set()
    finally:
        remove_netns(*(after - before))


@pytest.mark.parametrize("doc_change,pointer", [
    ({"interfaces": {"t\u00e0p": {}}}, "/nodes/h1/interfaces/t\u00e0p"),
    ({"sysctls": {"net.//.//x": "1"}}, "/nodes/h1/sysctls/net.~1~1.~1~1x"),
])
def test_validate_knows_what_up_refuses(tmp_path, doc_change, pointer):
    name = unique_name("sv")
    path = write(tmp_path, hosts(["h1"], h1=doc_change), name)
    r = run_labctl("validate", path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert pointer in r.stderr, r.stderr


@needs_strace
def test_full_disk_while_saving_the_topology_leaves_no_phantom_lab(tmp_path):
    state = private_state_dir()
    env = env_with(state)
    name = unique_name("sp")
    path = write(tmp_path, hosts(["h1"]), name)
    saved = os.path.join(state, name, "topology.json")
    try:
        r = subprocess.run([STRACE, "-f", "-qq", "-o", "/dev/null", "-P", saved, "-e", "trace=write",
                            "-e", "inject=write:error=ENOSPC", LABCTL, "up", str(path), "--no-verify"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 3 and "No space left on device" in r.stderr, r.stderr
        assert not os.path.lexists(os.path.join(state, name))
        assert json.loads(run_labctl("status", "--json", env=env).stdout) == []
        assert lab_namespaces(name) == []
    finally:
        run_labctl("down", "--all", env=env)
        shutil.rmtree(state, ignore_errors=True)


def test_ctrl_c_while_waiting_for_the_lock_leaves_nothing(tmp_path):
    import fcntl
    state = private_state_dir()
    env = env_with(state)
    name = unique_name("sc")
    path = write(tmp_path, hosts(["h1"]), name)
    try:
        assert run_labctl("down", name, env=env).returncode == 0  # makes the lock file
        locks = [os.path.join(d, f) for d, _, fs in os.walk(state) for f in fs if f == f"{name}.lock"]
        assert len(locks) == 1
        with open(locks[0]) as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            p = subprocess.Popen([LABCTL, "up", str(path), "--no-verify"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
            # Blocked in flock(2) (73 on x86-64) on the held lock.
            wait_for(lambda: open(f"/proc/{p.pid}/syscall").read().split()[0] == "73", "up to wait for the lock")
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=5)
        assert p.returncode == 3 and "interrupted" in err, err
        assert not os.path.lexists(os.path.join(state, name))
        assert lab_namespaces(name) == []
    finally:
        run_labctl("down", "--all", env=env)
        remove_netns(f"{name}-h1")
        shutil.rmtree(state, ignore_errors=True)


# ---- Medium 8: checks fit the host's neighbour table -----------------------------------------------

def test_all_pairs_beyond_the_neighbour_table_is_paced_not_lost(tmp_path):
    """All pairs of a LAN whose pairs need more neighbour entries than the host-wide table
    holds (gc_thresh3): the pings run in waves that fit, flushing the lab's own entries in
    between, so every pair answers (unpaced, thousands of pings were lost)."""
    limit = int(open("/proc/sys/net/ipv4/neigh/default/gc_thresh3").read())
    n = 2
    while n * (n - 1) <= 1.5 * limit:
        n += 1
    if n > 250:
        pytest.skip(f"gc_thresh3 is {limit}: the lab would be too big for this test")
    state = private_state_dir()
    env = env_with(state)
    name = unique_name("sa")
    doc = {"nodes": {"sw": {"kind": "switch"}}, "links": []}
    for i in range(1, n + 1):
        doc["nodes"][f"h{i}"] = {"interfaces": {"eth0": {"addresses": [f"10.30.0.{i}/24"]}}}
        doc["links"].append({"endpoints": [f"sw:p{i}", f"h{i}:eth0"]})
    path = write(tmp_path, doc, name)
    try:
        assert run_labctl("up", path, "--no-verify", env=env).returncode == 0
        r = run_labctl("verify", name, "--all-pairs", "--json", env=env, timeout=600)
        checks = json.loads(r.stdout)["checks"]
        assert len(checks) == n * (n - 1)
        failed = [c for c in checks if not c["ok"]]
        assert failed == [], f"{len(failed)} of {len(checks)} failed, e.g. {failed[:3]}"
        assert r.returncode == 0
    finally:
        run_labctl("down", "--all", env=env)
        shutil.rmtree(state, ignore_errors=True)
