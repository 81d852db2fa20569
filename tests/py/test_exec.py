"""`labctl exec`, node exec commands and daemons, end to end."""
import json
import os
import signal
import subprocess
import time

from conftest import STATE_ROOT, run_labctl
from labfix import netns_list


def running(pid):
    """True while pid is a live process (a zombie awaiting its reaper is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def two_hosts(**extra):
    doc = {
        "nodes": {
            "a": {"interfaces": {"eth0": {"addresses": ["10.3.0.1/24"]}}},
            "b": {"interfaces": {"eth0": {"addresses": ["10.3.0.2/24"]}}},
        },
        "links": [{"endpoints": ["a:eth0", "b:eth0"]}],
        "checks": [{"from": "a", "to": "b"}],
    }
    for node, fields in extra.items():
        doc["nodes"][node].update(fields)
    return doc


def test_exec_passes_exit_code_stdin_and_stdout(labs):
    path, name = labs.write(two_hosts())
    assert run_labctl("up", path).returncode == 0
    r = run_labctl("exec", name, "a", "--", "sh", "-c", "exit 7")
    assert r.returncode == 7
    r = run_labctl("exec", name, "a", "--", "cat", input="hello through stdin\n")
    assert r.returncode == 0 and r.stdout == "hello through stdin\n"
    r = run_labctl("exec", name, "a", "--", "sh", "-c", "echo out; echo err >&2")
    assert r.stdout == "out\n" and r.stderr == "err\n"


def test_exec_never_interprets_argv(labs, tmp_path):
    path, name = labs.write(two_hosts())
    assert run_labctl("up", path).returncode == 0
    marker = tmp_path / "pwned"
    tricky = [f"$(touch {marker})", f"; touch {marker}", f"`touch {marker}`", "a b", ""]
    r = run_labctl("exec", name, "a", "--", "printf", "%s\\n", *tricky)
    assert r.returncode == 0
    assert r.stdout.split("\n")[:5] == tricky
    assert not marker.exists()


def test_exec_sees_the_nodes_interfaces(labs):
    path, name = labs.write(two_hosts())
    assert run_labctl("up", path).returncode == 0
    r = run_labctl("exec", name, "b", "--", "ls", "/sys/class/net")
    assert sorted(r.stdout.split()) == ["eth0", "lo"]
    r = run_labctl("exec", name, "b", "--", "ip", "-j", "addr", "show", "eth0")
    assert "10.3.0.2" in r.stdout


def test_exec_errors(labs):
    path, name = labs.write(two_hosts())
    assert run_labctl("up", path).returncode == 0
    r = run_labctl("exec", name, "zz", "--", "true")
    assert r.returncode == 2 and "no node" in r.stderr
    r = run_labctl("exec", name, "a", "--", "/nonexistent/program")
    assert r.returncode == 127 and "ENOENT" in r.stderr


def test_node_exec_runs_before_checks(labs, tmp_path):
    flag = tmp_path / "ran"
    doc = two_hosts(a={"exec": [["sh", "-c", f"ip -o link show eth0 > {flag}"], f"echo shell is $((6*7)) >> {flag}"]})
    path, name = labs.write(doc)
    r = run_labctl("up", path)
    assert r.returncode == 0, r.stderr
    text = flag.read_text()
    assert "eth0" in text and "shell is 42" in text


def test_failing_or_hanging_exec_rolls_back(labs):
    doc = two_hosts(b={"exec": [["sh", "-c", "echo bad things; exit 3"]]})
    path, name = labs.write(doc)
    r = run_labctl("up", path)
    assert r.returncode == 3
    assert "b: exec" in r.stderr and "exited with 3" in r.stderr and "bad things" in r.stderr
    assert not [n for n in netns_list() if n.startswith(name + "-")]
    assert not os.path.exists(f"{STATE_ROOT}/{name}")


def test_hanging_exec_times_out_and_rolls_back(labs):
    doc = two_hosts(a={"exec": [["sleep", "100.4242"]]})  # a value nobody else sleeps
    path, name = labs.write(doc)
    t0 = time.monotonic()
    r = run_labctl("up", path, timeout=120)
    assert r.returncode == 3 and "30 s" in r.stderr
    assert 29 < time.monotonic() - t0 < 85
    assert not [n for n in netns_list() if n.startswith(name + "-")]
    assert "sleep 100.4242" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def test_daemon_serves_a_client_and_down_stops_it(labs):
    doc = two_hosts(a={"daemons": [["python3", "-m", "http.server", "8080", "--bind", "10.3.0.1"]]})
    path, name = labs.write(doc)
    assert run_labctl("up", path).returncode == 0
    st = json.loads(run_labctl("status", name, "--json").stdout)
    d = [n for n in st["nodes"] if n["name"] == "a"][0]["daemons"][0]
    assert d["running"] and d["pid"] > 0
    pid = d["pid"]
    fetch = "import urllib.request,time\n" \
            "for i in range(50):\n" \
            "    try:\n" \
            "        print(urllib.request.urlopen('http://10.3.0.1:8080/', timeout=2).status); break\n" \
            "    except OSError: time.sleep(0.1)\n"
    r = run_labctl("exec", name, "b", "--", "/usr/bin/python3", "-c", fetch)
    assert r.stdout.strip() == "200", r.stderr
    assert os.path.exists(d["log"])
    assert run_labctl("down", name).returncode == 0
    assert not running(pid)


def test_down_kills_stray_processes_in_the_lab(labs):
    path, name = labs.write(two_hosts())
    assert run_labctl("up", path).returncode == 0
    stray = subprocess.Popen(["ip", "netns", "exec", f"{name}-a", "sleep", "300"])
    try:
        # Observed, not hoped: the stray is `sleep` inside the lab's namespace a.
        lab_ns = os.stat(f"/run/netns/{name}-a").st_ino
        deadline = time.monotonic() + 10
        while True:
            try:
                inside = (os.stat(f"/proc/{stray.pid}/ns/net").st_ino == lab_ns and
                          open(f"/proc/{stray.pid}/comm").read().strip() == "sleep")
            except FileNotFoundError:
                inside = False
            if inside:
                break
            assert stray.poll() is None, f"the stray exited ({stray.returncode}) before it was in the lab"
            assert time.monotonic() < deadline, "the stray never entered the lab's namespace"
            time.sleep(0.01)
        assert run_labctl("down", name).returncode == 0
        assert stray.wait(timeout=10) in (-signal.SIGTERM, -signal.SIGKILL)
        assert not [n for n in netns_list() if n.startswith(name + "-")]
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait()
