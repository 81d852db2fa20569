"""Checks that grade (docs/topology.md, "Checks"), end to end through the CLI: TCP checks
made from inside a node, command checks, retries (`within_s`), names and points, JUnit.
Root only; every lab is removed by the `labs` fixture, also when a test fails."""
import json
import os
import time

import pytest

from conftest import run_labctl

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bringing labs up needs root")

# h1 -- h2 on one link, both families; h2 runs a TCP listener on port 8080 (both families).
LISTENER = ["python3", "-c",
            "import socket, time\n"
            "s = socket.socket(socket.AF_INET6)\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "s.bind(('::', 8080)); s.listen(64)\n"
            "print('listening', flush=True)\n"
            "while True:\n"
            "    c, _ = s.accept(); c.close()\n"]


def pair(checks, daemons=None):
    h2 = {"interfaces": {"eth0": {"addresses": ["10.3.1.2/24", "fd00:31::2/64"]}}}
    if daemons is not None:
        h2["daemons"] = daemons
    return {
        "nodes": {
            "h1": {"interfaces": {"eth0": {"addresses": ["10.3.1.1/24", "fd00:31::1/64"]}}},
            "h2": h2,
        },
        "links": [{"endpoints": ["h1:eth0", "h2:eth0"]}],
        "checks": checks,
    }


def wait_listening(name, node, port, timeout=15.0):
    """Until `ss` inside the node shows a listener on `port` (observed state, a deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = run_labctl("exec", name, node, "--", "ss", "-Hltn", f"sport = :{port}")
        if r.returncode == 0 and r.stdout.strip():
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {node}:{port} after {timeout} s")


def verify_json(target, *extra):
    r = run_labctl("verify", target, "--json", *extra)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    return r.returncode, json.loads(r.stdout)


def test_tcp_checks_ipv4_and_ipv6_reachable_refused_and_silent(labs):
    checks = [
        {"from": "h1", "to": "h2", "port": 8080},
        {"from": "h1", "to": "h2", "family": 6, "port": 8080},
        {"from": "h1:eth0", "to": "fd00:31::2", "port": 8080},
        {"from": "h1", "to": "h2", "port": 8081, "expect": "unreachable"},
        {"from": "h1", "to": "fd00:31::2", "port": 8081, "expect": "unreachable"},
        # Nobody has this address: ARP gets no answer, the SYN is never answered.
        {"from": "h1", "to": "10.3.1.99", "port": 22, "expect": "unreachable", "timeout_ms": 300},
        # No route at all: refused by h1's own kernel at once.
        {"from": "h1", "to": "10.9.9.9", "port": 22, "expect": "unreachable"},
    ]
    path, name = labs.write(pair(checks, [LISTENER]))
    r = run_labctl("up", path, "--no-verify")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_listening(name, "h2", 8080)

    code, out = verify_json(name)
    res = out["checks"]
    assert code == 0, json.dumps(res, indent=1)
    assert [c["kind"] for c in res] == ["tcp"] * 7
    assert [c["port"] for c in res] == [8080, 8080, 8080, 8081, 8081, 22, 22]
    assert res[0]["address"] == "10.3.1.2" and res[0]["received"] == 1 and res[0]["rtt_avg_ms"] > 0
    assert res[1]["address"] == "fd00:31::2" and res[1]["received"] == 1
    assert res[2]["received"] == 1
    assert "ECONNREFUSED" in res[3]["reason"] and "ECONNREFUSED" in res[4]["reason"]
    assert res[5]["reason"] == "No answer within 300 ms"
    assert "ENETUNREACH" in res[6]["reason"]

    # The text table shows the address and port; a refused port that should answer fails.
    t = run_labctl("verify", name)
    assert t.returncode == 0 and "[fd00:31::2]:8080" in t.stdout and "10.3.1.2:8080" in t.stdout, t.stdout


def test_a_tcp_check_that_fails_says_why(labs):
    path, name = labs.write(pair([{"from": "h1", "to": "h2", "port": 9}]))
    r = run_labctl("up", path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout and "Connection refused (ECONNREFUSED)" in r.stdout
    assert "0 passed, 1 failed" in r.stdout.splitlines()[-1]


def test_tcp_check_fields_are_validated(tmp_path):
    doc = pair([{"from": "h1", "to": "h2", "port": 0}, {"from": "h1", "to": "h2", "port": 80, "count": 2}])
    doc["name"] = "tcpbad"
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    r = run_labctl("validate", path)
    assert r.returncode == 2
    assert "/checks/0/port" in r.stderr and "/checks/1/count" in r.stderr, r.stderr


def test_command_checks_run_inside_the_node_and_show_output_on_failure(labs):
    doc = pair([
        {"on": "h1", "run": ["ip", "-4", "route", "show", "default"], "expect_stdout": "via 10\\.3\\.1\\.2"},
        {"on": "h2", "run": ["ip", "-o", "addr", "show", "dev", "eth0"], "expect_stdout": "inet 10\\.3\\.1\\.2/24"},
        {"on": "h1", "run": ["sh", "-c", "exit 1"], "expect_exit": 1},
        {"on": "h1", "run": ["sh", "-c", "echo hello; echo oops >&2; exit 3"]},
        {"on": "h1", "run": ["echo", "abc"], "expect_stdout": "^xyz"},
        {"on": "h1", "run": ["no-such-program-here"]},
        {"on": "h1", "run": ["sleep", "5"], "timeout_ms": 200},
    ])
    doc["nodes"]["h1"]["routes"] = [{"to": "default", "via": "10.3.1.2"}]
    path, name = labs.write(doc)
    r = run_labctl("up", path)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "3 passed, 4 failed", r.stdout
    # The output of a failed command is shown under the table.
    assert "h1: sh -c echo hello; echo oops >&2; exit 3: its output ends:" in r.stdout, r.stdout
    assert "  | hello" in lines and "  | oops" in lines, r.stdout

    code, out = verify_json(name)
    res = out["checks"]
    assert code == 1
    assert [c["kind"] for c in res] == ["command"] * 7
    assert [c["ok"] for c in res] == [True, True, True, False, False, False, False], res
    assert res[0]["on"] == "h1" and res[0]["run"] == ["ip", "-4", "route", "show", "default"]
    assert res[0]["returncode"] == 0 and "via 10.3.1.2" in res[0]["output"]
    assert res[3]["returncode"] == 3 and res[3]["reason"] == "exited with 3, expected 0"
    assert "hello" in res[3]["output"] and "oops" in res[3]["output"]
    assert res[4]["reason"] == "stdout does not match /^xyz/"
    assert "ENOENT" in res[5]["reason"] and res[5]["returncode"] is None
    assert res[6]["reason"] == "ran longer than 200 ms (killed)" and res[6]["returncode"] is None


def test_command_check_fields_are_validated(tmp_path):
    doc = pair([
        {"on": "h9", "run": ["true"]},
        {"on": "h1", "run": ["true"], "expect_stdout": "(unclosed"},
        {"on": "h1", "run": ["true"], "port": 80},
        {"on": "h1"},
    ])
    doc["name"] = "cmdbad"
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    r = run_labctl("validate", path)
    assert r.returncode == 2
    for pointer in ("/checks/0/on", "/checks/1/expect_stdout", "/checks/2/port", "/checks/3"):
        assert f"{pointer}:" in r.stderr, r.stderr


def test_within_s_waits_for_a_late_listener(labs, tmp_path):
    late = ["sh", "-c", "sleep 1.2; exec \"$0\" \"$@\"", *LISTENER]
    path, name = labs.write(pair([{"name": "web answers", "from": "h1", "to": "h2", "port": 8080,
                                   "within_s": 10}], [late]))
    r = run_labctl("up", path, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout)["checks"][0]
    assert res["ok"] and res["attempts"] > 1 and res["name"] == "web answers", res


def test_retries_run_in_parallel_and_cost_no_cpu_while_waiting(labs):
    # Three checks that never hold, each retried for 2 s: together about 2 s, not 6,
    # and the waits in between are spent in epoll, not spinning.
    checks = [
        {"from": "h1", "to": "h2", "port": 9, "within_s": 2},
        {"from": "h1", "to": "10.3.1.2", "expect": "unreachable", "within_s": 2, "count": 1},
        {"on": "h1", "run": ["false"], "within_s": 2},
    ]
    path, name = labs.write(pair(checks))
    r = run_labctl("up", path, "--no-verify")
    assert r.returncode == 0, r.stdout + r.stderr
    before = os.times()
    start = time.monotonic()
    code, out = verify_json(name)
    elapsed = time.monotonic() - start
    after = os.times()
    assert code == 1 and not any(c["ok"] for c in out["checks"])
    assert all(c["attempts"] >= 3 for c in out["checks"]), out["checks"]
    assert 2.0 <= elapsed < 4.0, elapsed
    # labctl's own CPU time (user + system) over the whole run, children of it included
    # (`false` runs a few times): far below the 2 s of waiting.
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    assert cpu < 0.5, cpu


def test_names_points_and_score(labs):
    checks = [
        {"name": "h2 answers", "from": "h1", "to": "h2", "points": 2},
        {"name": "no way out", "from": "h1", "to": "10.9.9.9", "points": 3},
        {"from": "h2", "to": "h1"},
    ]
    path, name = labs.write(pair(checks))
    r = run_labctl("up", path)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "2 passed, 1 failed, score 3/6", r.stdout
    header = next(line for line in lines if "RESULT" in line)
    assert header.split()[0] == "NAME" and "POINTS" in header, header
    code, out = verify_json(name)
    assert (out["score"], out["max_score"]) == (3, 6)
    assert [c["name"] for c in out["checks"]] == ["h2 answers", "no way out", "h2 -> h1"]
    assert [c["points"] for c in out["checks"]] == [2, 3, 1]

    # Without points other than 1 the last line has no score; JSON always has one.
    path, name = labs.write(pair([{"from": "h1", "to": "h2"}]))
    r = run_labctl("up", path)
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "1 passed, 0 failed", r.stdout
    code, out = verify_json(name)
    assert (out["score"], out["max_score"]) == (1, 1)


def test_verify_writes_junit_xml(labs, tmp_path):
    import xml.etree.ElementTree as ET

    checks = [
        {"name": "h2 answers", "from": "h1", "to": "h2", "points": 2},
        {"from": "h1", "to": "10.9.9.9"},
        {"on": "h1", "run": ["sh", "-c", "echo '<bad> & \"quoted\"'; exit 2"]},
        {"from": "h1", "to": "h2", "port": 9},
    ]
    path, name = labs.write(pair(checks))
    r = run_labctl("up", path, "--no-verify")
    assert r.returncode == 0, r.stderr
    report = tmp_path / "r.xml"
    r = run_labctl("verify", path, "--junit", report)
    assert r.returncode == 1, r.stdout + r.stderr
    root = ET.parse(report).getroot()  # a real XML parser: malformed output raises
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1 and suites[0].get("name") == name
    suite = suites[0]
    assert (suite.get("tests"), suite.get("failures")) == ("4", "3")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props == {"score": "2", "max_score": "5"}
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "h2 answers", "h1 -> 10.9.9.9", "h1: sh -c echo '<bad> & \"quoted\"'; exit 2", "h1 -> h2 port 9"]
    assert cases[0].find("failure") is None
    assert "ENETUNREACH" in cases[1].find("failure").get("message")
    failure = cases[2].find("failure")
    assert failure.get("message") == "exited with 2, expected 0"
    assert '<bad> & "quoted"' in failure.text
    assert "ECONNREFUSED" in cases[3].find("failure").get("message")
    assert cases[0].find("properties/property").get("value") == "2"


def test_python_check_results_carry_kind_name_points_and_output(labs):
    import labctl

    checks = [
        {"name": "ping h2", "from": "h1", "to": "h2", "points": 2},
        {"from": "h1", "to": "h2", "port": 9, "expect": "unreachable"},
        {"on": "h2", "run": ["sh", "-c", "echo out; exit 3"], "expect_exit": 3, "expect_stdout": "^out$"},
        {"on": "h2", "run": ["false"], "within_s": 0.3},
    ]
    path, name = labs.write(pair(checks))
    lab = labctl.Lab(path)
    try:
        with pytest.raises(labctl.CheckFailed) as failed:
            lab.up()
        res = failed.value.results
    finally:
        lab.down()
    assert [r.kind for r in res] == ["ping", "tcp", "command", "command"]
    assert [r.ok for r in res] == [True, True, True, False]
    assert [r.name for r in res] == ["ping h2", "h1 -> h2 port 9", "h2: sh -c echo out; exit 3", "h2: false"]
    assert [r.points for r in res] == [2, 1, 1, 1]
    assert res[1].port == 9 and res[0].port is None
    assert res[2].returncode == 3 and res[2].output == "out"
    assert res[3].attempts >= 2 and res[3].reason == "exited with 1, expected 0"
