"""The Python API (docs/python.md) against real namespaces. Every lab has a unique name and
is removed by the `names` fixture even when a test fails."""
import errno
import json
import os
import subprocess
import threading
import time

import pytest

import labctl
from conftest import run_labctl
from labfix import lab_namespaces, netns_list, pair, routed, star


# The namespace this process started in (the host's, for the root user running the tests).
HOST_NETNS = os.readlink("/proc/self/ns/net")


# --- validation: touches nothing ---------------------------------------------------------

def test_validate_reports_every_error_with_its_pointer(tmp_path):
    bad = {"name": "Bad Name", "nodes": {"h1": {"kind": "toaster"}},
           "links": [{"endpoints": ["h1:eth0", "r9:eth0"]}], "colour": "blue"}
    with pytest.raises(labctl.TopologyError) as info:
        labctl.validate(bad)
    e = info.value
    assert isinstance(e, ValueError) and isinstance(e, labctl.Error)
    pointers = dict(e.errors)
    assert all(isinstance(p, tuple) and len(p) == 2 for p in e.errors)
    assert "/colour" in pointers and "/name" in pointers and "/nodes/h1/kind" in pointers
    assert e.file == "<dict>"
    assert "<dict>: /colour: " in str(e)

    path = tmp_path / "topo.json"
    path.write_text(json.dumps({"name": "ok", "nodes": {"h1": {}},
                                "links": [{"endpoints": ["h1:eth0", "r9:eth0"]}]}))
    with pytest.raises(labctl.TopologyError) as info:
        labctl.Lab(path)
    assert info.value.errors == [("/links/0/endpoints/1", 'no node "r9"')]
    assert str(info.value) == f'{path}: /links/0/endpoints/1: no node "r9"'

    with pytest.raises(FileNotFoundError):
        labctl.validate(tmp_path / "missing.json")
    with pytest.raises(TypeError):
        labctl.validate(42)


def test_a_valid_topology_validates_and_a_lab_touches_nothing(names, tmp_path):
    name = names()
    assert labctl.validate(pair(name)) is None
    path = tmp_path / "pair.json"
    path.write_text(json.dumps(pair(name)))
    labctl.validate(str(path))
    lab = labctl.Lab(path)
    assert lab.name == name and lab.nodes == ["h1", "h2"] and not lab.is_up
    assert name in repr(lab)
    assert not lab_namespaces(name)


def test_a_dict_keeps_its_key_order(names):
    """Node order and the first-address rule follow the dict's order, as a file's would."""
    name = names()
    topo = {
        "name": name,
        "nodes": {
            "zz": {"interfaces": {"eth0": {"addresses": ["10.0.0.1/24"]},
                                  "lo": {"addresses": ["10.9.9.1/32"]}},
                   "routes": [{"to": "10.9.9.2/32", "via": "10.0.0.2"}]},
            "aa": {"interfaces": {"lo": {"addresses": ["10.9.9.2/32"]},
                                  "eth0": {"addresses": ["10.0.0.2/24"]}}},
        },
        "links": [{"endpoints": ["zz:eth0", "aa:eth0"]}],
        "checks": [{"from": "zz", "to": "aa"}, {"from": "aa", "to": "zz"}],
    }
    lab = labctl.Lab(topo)
    assert lab.nodes == ["zz", "aa"]
    results = lab.up()
    assert [(r.src, r.dst, r.address) for r in results] == [("zz", "aa", "10.9.9.2"), ("aa", "zz", "10.0.0.1")]
    assert lab.ping("zz", "aa").address == "10.9.9.2"
    assert lab.ping("aa", "zz").address == "10.0.0.1"
    lab.down()


def test_the_stub_names_what_the_module_has():
    """_core.pyi (what editors see) and _core (what runs) name the same things."""
    import ast
    import pathlib
    from labctl import _core

    stub = ast.parse((pathlib.Path(_core.__file__).parent / "_core.pyi").read_text())
    for item in stub.body:
        if isinstance(item, ast.ClassDef):
            cls = getattr(_core, item.name)
            for member in item.body:
                if isinstance(member, ast.FunctionDef):
                    assert hasattr(cls, member.name), f"{item.name}.{member.name}"
            public = {n for n in vars(cls) if not n.startswith("_")}
            assert public <= {m.name for m in item.body if isinstance(m, ast.FunctionDef)}, item.name
        elif isinstance(item, ast.FunctionDef):
            assert callable(getattr(_core, item.name)), item.name


# --- the whole life of a lab -------------------------------------------------------------

def test_up_ping_verify_exec_status_down(names):
    name = names()
    lab = labctl.Lab(routed(name))
    assert not lab.is_up
    results = lab.up()
    assert lab.is_up
    assert set(lab_namespaces(name)) == {f"{name}-h1", f"{name}-r1", f"{name}-h2"}
    assert [(r.src, r.dst, r.expect, r.ok) for r in results] == [
        ("h1", "h2", "reachable", True), ("h1", "203.0.113.9", "unreachable", True)]
    assert results[0].received >= 1 and results[0].rtt_ms > 0
    assert results[1].received == 0 and results[1].rtt_ms is None and "ENETUNREACH" in results[1].reason
    assert "CheckResult(src='h1'" in repr(results[0])

    p = lab.ping("h1", "h2", count=3, timeout=1.0)
    assert (p.ok, p.sent, p.received, p.address) == (True, 3, 3, "10.0.2.10")
    assert len(p.rtt_ms) == 3 and all(0 < x < 1000 for x in p.rtt_ms)
    assert repr(p).startswith("PingResult(src='h1', dst='h2', address='10.0.2.10', ok=True")
    p = lab.ping("h1:eth0", "203.0.113.9", count=2, timeout=0.3)
    assert not p.ok and p.received == 0 and p.rtt_ms == [] and p.reason
    assert lab.ping("h2", "h1:eth0", count=1).ok
    with pytest.raises(labctl.LabError, match="no node"):
        lab.ping("h1", "nosuchnode")

    pairs = lab.verify(all_pairs=True)
    assert len(pairs) == 6 and all(r.ok for r in pairs)
    assert [r.ok for r in lab.verify()] == [True, True]

    r = lab.exec("h1", ["ip", "-j", "addr", "show", "eth0"])
    assert r.returncode == 0 and r.stderr == "" and isinstance(r.stdout, str)
    assert json.loads(r.stdout)[0]["addr_info"][0]["local"] == "10.0.1.10"
    assert lab.exec("h2", ["cat"], input="hello\n").stdout == "hello\n"
    assert lab.exec("h2", ["cat"], input=b"\xff\x00").stdout == "\ufffd\x00"
    assert lab.exec("r1", "echo out; echo err >&2; exit 7").returncode == 7
    r = lab.exec("r1", "echo out; echo err >&2; exit 7")
    assert (r.stdout, r.stderr) == ("out\n", "err\n")
    with pytest.raises(labctl.ExecError) as info:
        lab.exec("h1", ["false"], check=True)
    assert isinstance(info.value, subprocess.CalledProcessError)
    assert info.value.returncode == 1 and info.value.node == "h1" and info.value.cmd == ["false"]
    start = time.monotonic()
    with pytest.raises(labctl.ExecTimeout) as info:
        lab.exec("h1", ["sh", "-c", "echo started; sleep 30"], timeout=0.5)
    assert time.monotonic() - start < 10
    assert isinstance(info.value, subprocess.TimeoutExpired) and info.value.timeout == 0.5
    assert info.value.result.stdout == "started\n"
    with pytest.raises(labctl.LabError) as info:
        lab.exec("h1", ["/nonexistent/program"])
    assert info.value.errno == errno.ENOENT
    with pytest.raises(labctl.LabError, match="no node"):
        lab.exec("h9", ["true"])

    status = lab.status()
    cli = run_labctl("status", name, "--json")
    assert cli.returncode == 0, cli.stderr
    assert status == json.loads(cli.stdout)
    assert status["up"] is True and [n["name"] for n in status["nodes"]] == ["h1", "r1", "h2"]
    assert any(entry["name"] == name for entry in labctl.status())

    assert lab.down() is True
    assert not lab.is_up and not lab_namespaces(name)
    assert lab.down() is False
    with pytest.raises(labctl.LabError, match="not up"):
        lab.ping("h1", "h2")


def test_attach_finds_a_running_lab(names):
    name = names()
    with pytest.raises(labctl.LabError, match="not up"):
        labctl.Lab.attach(name)
    labctl.Lab(pair(name)).up()
    lab = labctl.Lab.attach(name)
    assert lab.name == name and lab.nodes == ["h1", "h2"] and lab.is_up
    assert lab.ping("h1", "h2", count=1).ok
    lab.down()
    assert not lab_namespaces(name)


def test_check_failed_leaves_the_lab_up(names):
    name = names()
    lab = labctl.Lab(pair(name, checks=[{"from": "h1", "to": "h2"},
                                        {"from": "h1", "to": "h2", "expect": "unreachable"}]))
    with pytest.raises(labctl.CheckFailed) as info:
        lab.up()
    e = info.value
    assert isinstance(e, labctl.Error)
    assert [r.ok for r in e.results] == [True, False] and len(e.failed) == 1
    assert "1 of 2 checks failed" in str(e)
    assert lab.is_up and len(lab_namespaces(name)) == 2
    assert lab.ping("h1", "h2", count=1).ok
    assert lab.down() and not lab_namespaces(name)


def test_up_refused_by_a_foreign_namespace_is_a_lab_error_with_errno(names):
    name = names()
    foreign = f"{name}-h2"
    subprocess.run(["ip", "netns", "add", foreign], check=True)
    try:
        lab = labctl.Lab(pair(name))
        with pytest.raises(labctl.LabError) as info:
            lab.up()
        assert info.value.errno == errno.EEXIST and foreign in str(info.value)
        assert not lab.is_up
        assert lab_namespaces(name) == [foreign]  # ours removed, theirs untouched
        # The context manager does not remove a lab it did not bring up.
        with pytest.raises(labctl.LabError):
            with labctl.Lab(pair(name)):
                pass
        assert foreign in netns_list()
    finally:
        subprocess.run(["ip", "netns", "del", foreign], check=True)


def test_a_second_up_of_the_same_lab_is_refused(names):
    name = names()
    lab = labctl.Lab(pair(name))
    lab.up(verify=False)
    other = labctl.Lab(pair(name))
    with pytest.raises(labctl.LabError) as info:
        other.up()
    assert info.value.errno == errno.EEXIST and "already up" in str(info.value)
    assert lab.is_up  # the refused one removed nothing
    with pytest.raises(labctl.LabError):
        lab.up()  # twice from the same object: refused, and the object still owns its lab
    assert lab._owned and lab.is_up
    lab.down()


def test_a_kernel_refusal_keeps_its_errno_and_message(names):
    name = names()
    # A gateway on a link that is down (no connected route): the kernel says ENETUNREACH.
    topo = pair(name)
    topo["nodes"]["h1"]["interfaces"]["eth0"]["up"] = False
    topo["nodes"]["h1"]["routes"] = [{"to": "10.5.0.0/16", "via": "10.0.0.7"}]
    lab = labctl.Lab(topo)
    with pytest.raises(labctl.LabError) as info:
        lab.up()
    assert info.value.errno == errno.ENETUNREACH, str(info.value)
    assert "ENETUNREACH" in str(info.value)
    assert not lab.is_up and not lab_namespaces(name)


def test_context_manager_brings_up_and_always_removes(names):
    name = names()
    with labctl.Lab(pair(name)) as lab:
        assert lab.is_up and lab.ping("h1", "h2", count=1).ok
    assert not lab_namespaces(name)

    with pytest.raises(RuntimeError):
        with labctl.Lab(pair(name)) as lab:
            assert lab.is_up
            raise RuntimeError("boom")
    assert not lab_namespaces(name)

    failing = pair(name, checks=[{"from": "h1", "to": "h2", "expect": "unreachable"}])
    with pytest.raises(labctl.CheckFailed):
        with labctl.Lab(failing):
            pass
    assert not lab_namespaces(name)


# --- threads, the GIL, namespaces, descriptors -------------------------------------------

def python_keeps_running(call):
    """Runs call() while a Python thread counts; asserts the counter went on all along
    (the call released the GIL). Returns call()'s result and how long it took."""
    stop = threading.Event()
    beats = []

    def count():
        n = 0
        while not stop.is_set():
            n += 1
            if n % 2000 == 0:
                beats.append(time.monotonic())

    worker = threading.Thread(target=count)
    worker.start()
    try:
        while not beats:  # the counter is running before the call starts
            time.sleep(0.001)
        start = time.monotonic()
        result = call()
        end = time.monotonic()
    finally:
        stop.set()
        worker.join()
    during = [t for t in beats if start <= t <= end]
    gaps = [b - a for a, b in zip([start] + during, during + [end])]
    # A call holding the GIL throughout stops the counter for all of it: no beat inside,
    # one pause as long as the call. A loaded machine deschedules the counter now and
    # then, but not for most of a call whose own thread keeps running: relative bounds.
    # A call shorter than JUDGED_S is too short to tell; callers assert their calls were not.
    if end - start >= JUDGED_S:
        assert len(during) >= 3, f"{end - start:.2f}s, counter beat {len(during)} times"
        assert max(gaps) < 0.75 * (end - start), f"longest pause {max(gaps):.2f}s of {end - start:.2f}s"
    return result, end - start


JUDGED_S = 0.1


def test_a_python_thread_runs_while_a_200_node_lab_comes_up(names):
    # Large enough that `up` takes long enough to judge (60 nodes took 0.08 s).
    name = names("s")
    lab = labctl.Lab(dict(star(199), name=name))
    assert len(lab.nodes) == 200
    _, took = python_keeps_running(lab.up)
    assert took >= JUDGED_S and len(lab_namespaces(name)) == 200
    ping, took = python_keeps_running(lambda: lab.ping("h1", "h59", count=4, interval=0.2))
    assert ping.ok and took > 0.5
    _, took = python_keeps_running(lambda: lab.exec("h3", ["sleep", "0.5"], check=True))
    assert took >= 0.5
    # Judged when they take long enough (verify and status of this lab often do not).
    python_keeps_running(lab.verify)
    python_keeps_running(lab.status)
    python_keeps_running(lab.down)
    assert not lab_namespaces(name)


def test_no_python_thread_ever_leaves_the_host_namespace(names):
    host = HOST_NETNS
    assert os.readlink("/proc/thread-self/ns/net") == host
    seen = []
    errors = []

    def life(tag):
        try:
            for _ in range(3):
                name = names(tag)
                lab = labctl.Lab(routed(name))
                for call in (lab.up, lambda: lab.ping("h1", "h2", count=1), lab.verify,
                             lambda: lab.exec("h1", ["true"]), lab.status, lab.down):
                    call()
                    seen.append(os.readlink("/proc/thread-self/ns/net"))
        except Exception as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=life, args=(t,)) for t in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(seen) == 3 * 3 * 6 and set(seen) == {host}
    assert os.readlink("/proc/thread-self/ns/net") == host
    tasks = os.listdir("/proc/self/task")
    assert {os.readlink(f"/proc/self/task/{t}/ns/net") for t in tasks} == {host}


def test_twenty_up_down_cycles_leak_no_descriptors(names):
    name = names()

    def fds():
        return sorted(os.listdir("/proc/self/fd"))

    before = fds()
    threads_before = len(os.listdir("/proc/self/task"))
    for _ in range(20):
        lab = labctl.Lab(pair(name))
        lab.up()
        lab.ping("h1", "h2", count=1)
        lab.exec("h1", ["true"])
        lab.status()
        lab.down()
    assert fds() == before
    assert len(os.listdir("/proc/self/task")) == threads_before
    assert not lab_namespaces(name)
