"""Features some kernels lack: impairments (netem, tbf), 802.1Q, VLAN-filtering bridges,
dummy devices. Marked tests run where the kernel has the feature: on the host, or in the
test VM (tests/vm) when the host lacks it. The refusal test runs where it is missing."""
import json
import os
import re
import subprocess

import pytest

from conftest import STATE_ROOT, missing_kernel_features, run_labctl
from labfix import ip_json, netns_list


def pair(impair=None, **link):
    doc = {
        "nodes": {
            "a": {"interfaces": {"eth0": {"addresses": ["10.5.0.1/24"]}}},
            "b": {"interfaces": {"eth0": {"addresses": ["10.5.0.2/24"]}}},
        },
        "links": [{"endpoints": ["a:eth0", "b:eth0"], **link}],
    }
    if impair:
        doc["links"][0]["impair"] = impair
    return doc


def rtt_avg(ping_stdout):
    m = re.search(r"rtt min/avg/max = ([0-9.]+)/([0-9.]+)/([0-9.]+)", ping_stdout)
    return float(m.group(2)) if m else None


@pytest.mark.skipif(not missing_kernel_features(["netem"]), reason="this kernel has netem")
def test_missing_feature_is_refused_before_anything_is_touched(labs):
    path, name = labs.write(pair({"delay_ms": 40}))
    r = run_labctl("up", path)
    assert r.returncode == 3
    assert "netem" in r.stderr and "CONFIG_NET_SCH_NETEM" in r.stderr
    assert not [n for n in netns_list() if n.startswith(name + "-")]
    assert not os.path.exists(f"{STATE_ROOT}/{name}")
    assert not [n for n in netns_list() if n.startswith("labctl-probe")]


@pytest.mark.kernel("netem")
def test_delay_on_both_ends_doubles_in_the_rtt(labs):
    path, name = labs.write(pair({"delay_ms": 40}))
    r = run_labctl("up", path)
    assert r.returncode == 0, r.stderr
    tc = subprocess.run(["ip", "netns", "exec", f"{name}-a", "tc", "-j", "qdisc", "show", "dev", "eth0"],
                        capture_output=True, text=True).stdout
    assert any(q["kind"] == "netem" for q in json.loads(tc))
    p = run_labctl("ping", name, "a", "b", "-c", "5")
    assert p.returncode == 0, p.stdout
    avg = rtt_avg(p.stdout)
    assert 78 <= avg <= 250, p.stdout  # 2 x 40 ms, plus an emulated CPU's slowness


@pytest.mark.kernel("netem")
def test_total_loss_gives_no_replies_and_an_unreachable_check_passes(labs):
    doc = pair({"loss_pct": 100})
    doc["checks"] = [{"from": "a", "to": "b", "expect": "unreachable", "count": 2, "timeout_ms": 300}]
    path, name = labs.write(doc)
    r = run_labctl("up", path)
    assert r.returncode == 0, r.stdout + r.stderr
    p = run_labctl("ping", name, "a", "b", "-c", "5", "-W", "0.3")
    assert p.returncode == 1 and " 0 received" in p.stdout


@pytest.mark.kernel("tbf")
def test_rate_alone_uses_tbf(labs):
    path, name = labs.write(pair({"rate_mbit": 10}))
    r = run_labctl("up", path, "--no-verify")
    assert r.returncode == 0, r.stderr
    for node in ("a", "b"):
        tc = subprocess.run(["ip", "netns", "exec", f"{name}-{node}", "tc", "-j", "qdisc", "show", "dev", "eth0"],
                            capture_output=True, text=True).stdout
        assert any(q["kind"] == "tbf" for q in json.loads(tc)), tc
    assert run_labctl("ping", name, "a", "b", "-c", "2").returncode == 0


@pytest.mark.kernel("dummy")
def test_dummy_devices(labs):
    doc = pair()
    doc["nodes"]["a"]["interfaces"]["d0"] = {"type": "dummy", "addresses": ["198.51.100.1/32"]}
    doc["nodes"]["b"]["routes"] = [{"to": "198.51.100.1/32", "via": "10.5.0.1"}]
    doc["checks"] = [{"from": "b", "to": "a:d0"}]
    path, name = labs.write(doc)
    r = run_labctl("up", path)
    assert r.returncode == 0, r.stdout + r.stderr
    links = {item["ifname"]: item for item in ip_json(f"{name}-a", "-d", "link", "show")}
    assert links["d0"]["linkinfo"]["info_kind"] == "dummy"


VLAN_SWITCH = {
    "nodes": {
        "sw": {"kind": "switch", "vlan_filtering": True,
               "interfaces": {"p1": {"pvid": 10}, "p2": {"pvid": 10}, "p3": {"pvid": 20},
                              "trunk": {"tagged": [10, 20]}}},
        "a": {"interfaces": {"eth0": {"addresses": ["10.6.0.1/24"]}}},
        "b": {"interfaces": {"eth0": {"addresses": ["10.6.0.2/24"]}}},
        "c": {"interfaces": {"eth0": {"addresses": ["10.6.0.3/24"]}}},
        "r": {"kind": "router",
              "interfaces": {"eth0.10": {"type": "vlan", "parent": "eth0", "id": 10, "addresses": ["10.6.0.254/24"]},
                             "eth0.20": {"type": "vlan", "parent": "eth0", "id": 20, "addresses": ["10.7.0.254/24"]}}},
    },
    "links": [
        {"endpoints": ["sw:p1", "a:eth0"]},
        {"endpoints": ["sw:p2", "b:eth0"]},
        {"endpoints": ["sw:p3", "c:eth0"]},
        {"endpoints": ["sw:trunk", "r:eth0"]},
    ],
    "checks": [
        {"from": "a", "to": "b"},
        {"from": "a", "to": "c", "expect": "unreachable", "count": 2, "timeout_ms": 300},
        {"from": "a", "to": "10.6.0.254"},
        {"from": "c", "to": "10.6.0.254", "expect": "unreachable", "count": 2, "timeout_ms": 300},
    ],
}


@pytest.mark.kernel("bridge_vlan_filtering", "vlan")
def test_vlan_filtering_switch_and_router_on_a_stick(labs):
    path, name = labs.write(VLAN_SWITCH)
    r = run_labctl("up", path)
    assert r.returncode == 0, r.stdout + r.stderr
    vlans = json.loads(subprocess.run(["ip", "netns", "exec", f"{name}-sw", "bridge", "-j", "vlan", "show"],
                                      capture_output=True, text=True).stdout)
    ports = {v["ifname"]: v["vlans"] for v in vlans}
    p1 = ports["p1"]
    assert [x["vlan"] for x in p1] == [10] and "PVID" in p1[0]["flags"] and "Egress Untagged" in p1[0]["flags"]
    assert sorted(x["vlan"] for x in ports["trunk"]) == [10, 20]
    assert all("Egress Untagged" not in x.get("flags", []) for x in ports["trunk"])
    links = {item["ifname"]: item for item in ip_json(f"{name}-r", "-d", "link", "show")}
    assert links["eth0.10"]["linkinfo"]["info_kind"] == "vlan"
    assert links["eth0.10"]["linkinfo"]["info_data"]["id"] == 10
