"""The Python API and pytest plugin as a new user meets them: missing files, ping's count
and family, attach as a context manager, is_up of this topology, short plugin errors,
exec with env/cwd, background processes."""
import errno
import json
import signal
import time

import pytest

import labctl
from conftest import run_labctl
from labfix import lab_namespaces, pair

pytest_plugins = ["pytester"]


@pytest.fixture
def up_pair(names):
    lab = labctl.Lab(pair(names()))
    lab.up()
    return lab


# --- 16 ---------------------------------------------------------------------------------

def test_a_missing_file_raises_file_not_found(tmp_path):
    for call in (labctl.Lab, labctl.validate):
        with pytest.raises(FileNotFoundError) as info:
            call(tmp_path / "missing.json")
        assert isinstance(info.value, OSError) and info.value.errno == errno.ENOENT
        assert info.value.filename == str(tmp_path / "missing.json")
    with pytest.raises(labctl.TopologyError):  # a directory is no topology, but it exists
        labctl.Lab(tmp_path)


# --- 17 ---------------------------------------------------------------------------------

def test_ping_count_in_the_clis_words_and_family(up_pair):
    lab = up_pair
    for bad in (0, 65536):
        with pytest.raises(ValueError) as info:
            lab.ping("h1", "h2", count=bad)
        assert str(info.value) == f"count must be 1 to 65535, not {bad}"
        assert str(info.value) in run_labctl("ping", lab.name, "h1", "h2", "-c", bad).stderr
    r = lab.ping("h1", "h2", count=1, family=6)
    assert r.ok and r.address == "fd00::2"
    assert lab.ping("h1", "h2", count=1, family=4).address == "10.0.0.2"
    with pytest.raises(ValueError):
        lab.ping("h1", "h2", family=5)
    with pytest.raises(labctl.LabError):
        lab.ping("h1", "10.0.0.2", count=1, family=6)
    # The same field names as `labctl ping --json`.
    cli = json.loads(run_labctl("ping", lab.name, "h1", "h2", "-c", "2", "--json").stdout)
    r = lab.ping("h1", "h2", count=2)
    for key in ("src", "dst", "address", "ok", "sent", "received", "loss_pct", "rtt_ms", "rtt_min_ms",
                "rtt_avg_ms", "rtt_max_ms", "reason"):
        assert hasattr(r, key), key
        assert key in cli, key
    assert r.loss_pct == 0 and r.rtt_min_ms <= r.rtt_avg_ms <= r.rtt_max_ms


def test_check_results_have_the_json_names(up_pair):
    lab = up_pair
    cli = json.loads(run_labctl("verify", lab.name, "--json").stdout)["checks"][0]
    py = lab.verify()[0]
    for key, value in cli.items():
        assert hasattr(py, key), key
        if key not in ("rtt_min_ms", "rtt_avg_ms", "rtt_max_ms"):
            assert getattr(py, key) == value, key


# --- 18 ---------------------------------------------------------------------------------

def test_attach_as_a_context_manager_downs_on_exit(up_pair):
    name = up_pair.name
    with labctl.Lab.attach(name) as lab:  # no second up ("already up")
        assert lab.is_up and lab.ping("h1", "h2", count=1).ok
    assert not lab_namespaces(name)
    assert not labctl.Lab(pair(name)).is_up


def test_is_up_says_whether_this_topology_is_the_one_up(up_pair, tmp_path):
    name = up_pair.name
    same = tmp_path / "same.json"
    same.write_text(json.dumps(pair(name), indent=4, sort_keys=True))  # other spacing and order
    assert labctl.Lab(same).is_up
    assert labctl.Lab.attach(name).is_up
    other = pair(name)
    other["nodes"]["h2"]["interfaces"]["eth0"]["addresses"] = ["10.0.0.3/24"]
    assert not labctl.Lab(other).is_up


# --- 19 ---------------------------------------------------------------------------------

def test_plugin_errors_are_labctls_message_only(pytester, importable_labctl, names):
    name = names()
    bad = pair(name)
    bad["links"].append({"endpoints": ["h1:eth1", "r9:eth0"]})
    (pytester.path / "bad.json").write_text(json.dumps(bad))
    pytester.makepyfile(test_user="""
        import pytest

        @pytest.mark.lab("bad.json")
        def test_it(lab):
            pass

        @pytest.mark.lab("missing.json")
        def test_missing(lab):
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "labctl.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        '*labctl: TopologyError: *bad.json: /links/1/endpoints/1: no node "r9"',
        "*labctl: FileNotFoundError: *No such file or directory*missing.json*",
    ])
    assert "pytest_plugin.py" not in out and "Traceback" not in out
    assert not lab_namespaces(name)


# --- 20 ---------------------------------------------------------------------------------

def test_exec_takes_env_and_cwd(up_pair, tmp_path):
    r = up_pair.exec("h1", ["sh", "-c", 'echo "$GREETING"; pwd'], env={"GREETING": "hi there"}, cwd=tmp_path,
                     check=True)
    assert r.stdout == f"hi there\n{tmp_path}\n"
    with pytest.raises(labctl.LabError) as info:
        up_pair.exec("h1", ["true"], cwd=tmp_path / "nowhere")
    assert info.value.errno == errno.ENOENT and "working directory" in str(info.value)


SERVER = """
import socket
s = socket.socket()
s.bind(("10.0.0.2", 5007))
s.listen()
print("listening", flush=True)
c, _ = s.accept()
c.sendall(c.recv(100).upper())
c.close()
"""

CLIENT = """
import socket
c = socket.create_connection(("10.0.0.2", 5007), timeout=5)
c.sendall(b"hello from h1")
print(c.recv(100).decode())
"""


def wait_for(predicate, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
    return predicate()


def test_popen_runs_a_server_while_a_client_talks_to_it(up_pair):
    lab = up_pair
    server = lab.popen("h2", ["python3", "-c", SERVER])
    assert server.poll() is None and server.pid > 0
    assert wait_for(lambda: "listening" in server.output() or server.poll() is not None), server.output()
    r = lab.exec("h1", ["python3", "-c", CLIENT], timeout=30, check=True)
    assert r.stdout == "HELLO FROM H1\n"
    assert server.wait(timeout=10) == 0


def test_popen_processes_end_with_the_lab(up_pair):
    lab = up_pair
    sleeper = lab.popen("h1", "exec sleep 600")
    daemons = lab.status()["nodes"][0]["daemons"]
    assert [d["pid"] for d in daemons] == [sleeper.pid] and daemons[0]["state"] == "running"
    with pytest.raises(Exception):  # still running
        sleeper.wait(timeout=0.1)
    lab.down()
    assert sleeper.wait(timeout=10) == -signal.SIGTERM
    with labctl.Lab(pair(lab.name)) as again:  # up again; down after the block
        with again.popen("h2", ["sleep", "600"]) as p:
            pass
        assert p.returncode == -signal.SIGTERM


def test_popen_of_a_missing_program_raises(up_pair):
    with pytest.raises(labctl.LabError) as info:
        up_pair.popen("h1", ["no-such-program-here"])
    assert info.value.errno == errno.ENOENT
    with pytest.raises(labctl.LabError):
        up_pair.popen("h9", ["true"])
