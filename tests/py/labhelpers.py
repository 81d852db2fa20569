"""Helpers shared by the Python API and plugin tests: unique lab names, small topologies,
what `ip netns list` shows."""
import itertools
import os
import subprocess

_serial = itertools.count()


def unique_name(tag="l"):
    """A lab name no other test (or concurrent run) uses: py<pid%10000><tag><n>."""
    name = f"py{os.getpid() % 10000}{tag}{next(_serial)}"
    assert len(name) <= 16
    return name


def netns_list():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def lab_namespaces(name):
    return {ns for ns in netns_list() if ns.startswith(name + "-")}


def pair(name, checks=None):
    """Two hosts on one veth: h1 10.0.0.1, h2 10.0.0.2 (and fd00::1, fd00::2)."""
    return {
        "name": name,
        "nodes": {
            "h1": {"interfaces": {"eth0": {"addresses": ["10.0.0.1/24", "fd00::1/64"]}}},
            "h2": {"interfaces": {"eth0": {"addresses": ["10.0.0.2/24", "fd00::2/64"]}}},
        },
        "links": [{"endpoints": ["h1:eth0", "h2:eth0"]}],
        "checks": [{"from": "h1", "to": "h2"}] if checks is None else checks,
    }


def routed(name):
    """h1 - r1 - h2 across a router; h1 has no route to 203.0.113.0/24."""
    return {
        "name": name,
        "nodes": {
            "h1": {"interfaces": {"eth0": {"addresses": ["10.0.1.10/24"]}},
                   "routes": [{"to": "10.0.2.0/24", "via": "10.0.1.1"}]},
            "r1": {"kind": "router",
                   "interfaces": {"eth1": {"addresses": ["10.0.1.1/24"]},
                                  "eth2": {"addresses": ["10.0.2.1/24"]}}},
            "h2": {"interfaces": {"eth0": {"addresses": ["10.0.2.10/24"]}},
                   "routes": [{"to": "default", "via": "10.0.2.1"}]},
        },
        "links": [{"endpoints": ["h1:eth0", "r1:eth1"]}, {"endpoints": ["r1:eth2", "h2:eth0"]}],
        "checks": [{"from": "h1", "to": "h2"},
                   {"from": "h1", "to": "203.0.113.9", "expect": "unreachable"}],
    }
