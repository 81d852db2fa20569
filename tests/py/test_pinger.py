"""The internal pinger through `labctl verify` and `labctl ping`, against iputils ping."""
import json
import subprocess

import pytest

from conftest import run_labctl
from labfix import unique_name

# Two LANs joined by a router; h9 has no route back, so h1 -> h9 is not answered.
ROUTED = {
    "nodes": {
        "h1": {"interfaces": {"eth0": {"addresses": ["10.2.1.10/24", "fd00:21::10/64"]}},
               "routes": [{"to": "default", "via": "10.2.1.1"}, {"to": "default", "via": "fd00:21::1"}]},
        "r": {"kind": "router",
              "interfaces": {"eth1": {"addresses": ["10.2.1.1/24", "fd00:21::1/64"]},
                             "eth2": {"addresses": ["10.2.2.1/24", "fd00:22::1/64"]}}},
        "h2": {"interfaces": {"eth0": {"addresses": ["10.2.2.10/24", "fd00:22::10/64"]}},
               "routes": [{"to": "default", "via": "10.2.2.1"}, {"to": "default", "via": "fd00:22::1"}]},
        "h9": {"interfaces": {"eth0": {"addresses": ["10.2.2.99/24", "fd00:22::99/64"]}}},
        "sw": {"kind": "switch"},
    },
    "links": [
        {"endpoints": ["h1:eth0", "r:eth1"]},
        {"endpoints": ["r:eth2", "sw:p0"]},
        {"endpoints": ["sw:p1", "h2:eth0"]},
        {"endpoints": ["sw:p2", "h9:eth0"]},
    ],
    "checks": [
        {"from": "h1", "to": "h2"},
        {"from": "h1", "to": "h2", "family": 6},
        {"from": "h1", "to": "h9", "expect": "unreachable"},
        {"from": "h1", "to": "h9", "family": 6, "expect": "unreachable"},
        {"from": "h1", "to": "198.51.100.7", "expect": "unreachable"},
    ],
}

PAIRS = [  # from, address, what iputils ping is expected to say (checked, not assumed)
    ("h1", "10.2.2.10"), ("h1", "fd00:22::10"), ("h1", "10.2.2.99"), ("h1", "fd00:22::99"),
    ("h1", "198.51.100.7"), ("h2", "10.2.1.10"), ("h9", "10.2.1.10"), ("h9", "10.2.2.10"),
    ("h2", "fd00:21::10"), ("h1", "10.2.1.77"), ("r", "10.2.2.99"), ("r", "fd00:99::1"),
]


@pytest.fixture
def routed(labs):
    path, name = labs.write(ROUTED)
    r = run_labctl("up", path)
    assert r.returncode == 0, r.stdout + r.stderr
    return path, name


def iputils_reachable(ns, address):
    r = subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", address],
                       capture_output=True, text=True)
    return r.returncode == 0


def test_checks_pass_on_the_first_try(routed):
    _, name = routed
    r = run_labctl("verify", name, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and len(doc["checks"]) == 5
    first = doc["checks"][0]
    assert first["received"] >= 1 and first["rtt_min_ms"] > 0 and first["address"] == "10.2.2.10"
    refused = doc["checks"][4]
    assert refused["received"] == 0 and refused["reason"]


def test_verdicts_agree_with_iputils_ping(routed):
    _, name = routed
    for src, address in PAIRS:
        ours = run_labctl("ping", name, src, address, "-c", "3", "-W", "1")
        theirs = iputils_reachable(f"{name}-{src}", address)
        assert (ours.returncode == 0) == theirs, f"{src} -> {address}: labctl {ours.stdout}{ours.stderr}"
        assert ours.returncode in (0, 1)


def test_ping_prints_replies_and_a_summary(routed):
    _, name = routed
    r = run_labctl("ping", name, "h1", "h2", "-c", "4")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert sum("icmp_seq=" in line for line in lines) == 4
    assert "4 packets transmitted, 4 received, 0% packet loss" in r.stdout
    assert "rtt min/avg/max" in r.stdout
    r = run_labctl("ping", name, "h1:eth0", "h2:eth0", "-c", "1")
    assert r.returncode == 0 and "10.2.2.10" in r.stdout


def test_ping_of_an_unreachable_address_exits_1(routed):
    _, name = routed
    r = run_labctl("ping", name, "h1", "198.51.100.7", "-c", "2", "-W", "0.5")
    assert r.returncode == 1
    assert "100% packet loss" in r.stdout or "0 received" in r.stdout
    r = run_labctl("ping", name, "h9", "203.0.113.1", "-c", "1")
    assert r.returncode == 1 and "ENETUNREACH" in r.stdout


def test_ping_unknown_names_are_errors(routed):
    _, name = routed
    assert run_labctl("ping", name, "nosuch", "h1").returncode == 2
    assert run_labctl("ping", name, "h1", "h1:eth7").returncode == 2
    assert run_labctl("ping", unique_name(), "h1", "h2").returncode == 2


def test_reachable_check_on_a_missing_route_fails_with_exit_1(labs):
    doc = json.loads(json.dumps(ROUTED))
    doc["checks"] = [{"from": "h1", "to": "h9"}]  # h9 has no route back to h1
    path, name = labs.write(doc)
    r = run_labctl("up", path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout and "0 passed, 1 failed" in r.stdout
    # the lab stays up
    assert run_labctl("verify", name).returncode == 1
    assert run_labctl("status", name, "--json").returncode == 0


def test_unreachable_check_fails_when_something_answers(labs):
    doc = json.loads(json.dumps(ROUTED))
    doc["checks"] = [{"from": "h1", "to": "h2", "expect": "unreachable"}]
    path, _ = labs.write(doc)
    r = run_labctl("up", path, "--json")
    assert r.returncode == 1
    res = json.loads(r.stdout)["checks"][0]
    assert res["ok"] is False and res["received"] >= 1


def test_verify_all_pairs(routed):
    _, name = routed
    r = run_labctl("verify", name, "--all-pairs", "--json")
    doc = json.loads(r.stdout)
    pairs = {(c["src"], c["dst"]): c["ok"] for c in doc["checks"]}
    # every node with an address, from every other one (sw has none: neither a target
    # nor a source)
    assert len(pairs) == 4 * 3
    assert not [p for p in pairs if "sw" in p]
    assert pairs[("h1", "h2")] and pairs[("h2", "h1")]
    assert not pairs[("h1", "h9")]
    assert r.returncode == 1


def test_all_pairs_use_a_family_both_ends_have(labs):
    """Every family both have (a dual-stack pair on IPv4 and IPv6); no pair without a
    common family, none from a switch: a healthy lab passes."""
    doc = {
        "nodes": {"sw": {"kind": "switch"},
                  "a": {"interfaces": {"eth0": {"addresses": ["10.9.0.1/24", "fd00:9::1/64"]}}},
                  "b": {"interfaces": {"eth0": {"addresses": ["fd00:9::2/64"]}}},
                  "c": {"interfaces": {"eth0": {"addresses": ["10.9.0.3/24"]}}}},
        "links": [{"endpoints": ["sw:p1", "a:eth0"]}, {"endpoints": ["sw:p2", "b:eth0"]},
                  {"endpoints": ["sw:p3", "c:eth0"]}],
    }
    path, name = labs.write(doc)
    assert run_labctl("up", path, "--no-verify").returncode == 0
    r = run_labctl("verify", name, "--all-pairs", "--json")
    got = {(c["src"], c["dst"], c["address"]): c["ok"] for c in json.loads(r.stdout)["checks"]}
    assert got == {("a", "b", "fd00:9::2"): True, ("a", "c", "10.9.0.3"): True,
                   ("b", "a", "fd00:9::1"): True, ("c", "a", "10.9.0.1"): True}, got
    assert r.returncode == 0, r.stdout + r.stderr


def test_all_pairs_beyond_the_neighbour_limit_is_announced(labs):
    from labfix import star
    limit = int(open("/proc/sys/net/ipv4/neigh/default/gc_thresh3").read())
    n = 2
    while n * (n - 1) <= limit:
        n += 1
    path, name = labs.write(star(n))
    assert run_labctl("up", path, "--no-verify").returncode == 0
    # The warning comes before any ping; the result itself is not the point here.
    r = run_labctl("verify", name, "--all-pairs", timeout=300)
    assert "gc_thresh3" in r.stderr and f"allows {limit}" in r.stderr
    assert run_labctl("verify", name).returncode == 0
    assert "warning" not in run_labctl("verify", name).stderr
