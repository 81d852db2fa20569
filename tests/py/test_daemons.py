"""Daemons with readiness (docs/topology.md, "Daemons"): `up` waits until each is ready,
fails (exit 3, rolled back) when one exits or never gets ready, naming it, how it ended
and its last output; `status` shows each daemon running or exited with its status."""
import json
import os
import time

import pytest

from conftest import run_labctl
from labfix import netns_list
from test_checks import LISTENER, pair

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bringing labs up needs root")

LATE_LISTENER = ["sh", "-c", "sleep 1.2; exec \"$0\" \"$@\"", *LISTENER]


def test_up_waits_for_a_port_so_the_first_check_holds(labs):
    # No within_s: the check runs once, right after up saw the daemon ready.
    path, name = labs.write(pair([{"from": "h1", "to": "h2", "port": 8080}],
                                 [{"run": LATE_LISTENER, "ready": {"port": 8080}}]))
    start = time.monotonic()
    r = run_labctl("up", path, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.monotonic() - start >= 1.2
    out = json.loads(r.stdout)
    assert out["checks"][0]["ok"] and out["checks"][0]["attempts"] == 1


def test_up_waits_for_a_ready_command(labs):
    ready = ["sh", "-c", "ss -Hltn 'sport = :8080' | grep -q ."]
    path, name = labs.write(pair([{"from": "h1", "to": "h2", "port": 8080}],
                                 [{"run": LATE_LISTENER, "ready": {"run": ready}, "ready_timeout_s": 20}]))
    r = run_labctl("up", path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_daemon_that_exits_fails_up_and_is_rolled_back(labs):
    dying = ["sh", "-c", "echo starting; echo 'bad config line 3' >&2; exit 4"]
    path, name = labs.write(pair([], [{"run": dying, "ready": {"port": 80}}]))
    r = run_labctl("up", path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert 'h2: daemon "sh -c echo starting;' in r.stderr, r.stderr
    assert "exited with status 4" in r.stderr and "bad config line 3" in r.stderr, r.stderr
    assert not [ns for ns in netns_list() if ns.startswith(name + "-")]
    assert run_labctl("status", name).returncode != 0


def test_a_daemon_never_ready_fails_up_in_time(labs):
    path, name = labs.write(pair([], [{"run": ["sh", "-c", "echo waiting; exec sleep 600"],
                                       "ready": {"port": 80}, "ready_timeout_s": 1}]))
    start = time.monotonic()
    r = run_labctl("up", path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert time.monotonic() - start < 10
    assert "was not ready after 1 s (no connection to port 80 on its addresses)" in r.stderr, r.stderr
    assert "waiting" in r.stderr
    assert not [ns for ns in netns_list() if ns.startswith(name + "-")]


def test_status_shows_daemons_running_or_exited_with_status(labs):
    path, name = labs.write(pair([], [["sleep", "600"], ["sh", "-c", "sleep 0.3; exit 7"]]))
    r = run_labctl("up", path)
    assert r.returncode == 0, r.stdout + r.stderr
    deadline = time.monotonic() + 15
    while True:
        s = json.loads(run_labctl("status", name, "--json").stdout)
        daemons = next(n for n in s["nodes"] if n["name"] == "h2")["daemons"]
        if daemons[1]["state"] == "exited" and daemons[1]["exit_status"] is not None:
            break
        assert time.monotonic() < deadline, daemons
        time.sleep(0.05)
    assert daemons[0]["state"] == "running" and daemons[0]["running"]
    assert daemons[1]["exit_status"] == 7
    text = run_labctl("status", name).stdout
    assert "running: sleep 600" in text and "exited with status 7: sh -c sleep 0.3; exit 7" in text, text
