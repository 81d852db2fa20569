"""The one helper module of tests/py: unique lab names, small topologies (pair, routed, star),
what `ip netns list` shows, root-namespace witnesses, and Labs (topology files + cleanup).
Fixtures built on these live in conftest.py (`labs`, `names`)."""
import itertools
import json
import os
import subprocess

from conftest import run_labctl

_counter = itertools.count()


def unique_name(prefix="t"):
    """A lab name no other test (or concurrent run) uses: ^[a-z][a-z0-9-]{0,15}$."""
    return f"{prefix}{os.getpid() % 100000}x{next(_counter)}"[:16]


def netns_list():
    """The names `ip netns list` shows, in its order."""
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout
    return [n["name"] for n in json.loads(out or "[]")]


def lab_namespaces(name):
    """The namespaces of lab NAME (<name>-*), sorted."""
    return sorted(n for n in netns_list() if n.startswith(name + "-"))


def ip_json(ns, *args):
    """`ip -j ARGS` inside namespace NS (None: the root namespace), parsed."""
    cmd = ["ip"] + (["-n", ns] if ns else []) + ["-j", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(r.stdout or "[]")


def root_snapshot():
    """The root namespace's links, addresses and routes, as ip prints them (no counters)."""
    return {
        "links": subprocess.run(["ip", "-d", "link", "show"], capture_output=True, text=True).stdout,
        "addrs": subprocess.run(["ip", "addr", "show"], capture_output=True, text=True).stdout,
        "routes4": subprocess.run(["ip", "route", "show", "table", "all"], capture_output=True, text=True).stdout,
        "routes6": subprocess.run(["ip", "-6", "route", "show", "table", "all"], capture_output=True, text=True).stdout,
    }


class Labs:
    """Writes topologies and removes every lab (and namespace) a test made, always."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.names = set()

    def write(self, doc, name=None):
        doc = dict(doc)
        doc["name"] = name or doc.get("name") or unique_name()
        self.names.add(doc["name"])
        path = self.tmp_path / f"{doc['name']}.json"
        path.write_text(json.dumps(doc, indent=1))
        return path, doc["name"]

    def cleanup(self):
        for name in self.names:
            run_labctl("down", name)
            for ns in netns_list():
                if ns.startswith(name + "-"):
                    subprocess.run(["ip", "netns", "del", ns])


def star(n_hosts, checks=True):
    """A switch sw with n_hosts hosts h1..hN (eth0 10.<i // 250>.<i % 250>.1/8, port sw:p<i>);
    a check h1 -> hN when checks and N >= 2. No name: Labs.write or the caller sets one."""
    nodes = {"sw": {"kind": "switch"}}
    links = []
    for i in range(1, n_hosts + 1):
        nodes[f"h{i}"] = {"interfaces": {"eth0": {"addresses": [f"10.{i // 250}.{i % 250}.1/8"]}}}
        links.append({"endpoints": [f"sw:p{i}", f"h{i}:eth0"]})
    doc = {"nodes": nodes, "links": links}
    if checks and n_hosts >= 2:
        doc["checks"] = [{"from": "h1", "to": f"h{n_hosts}"}]
    return doc


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


def run_plugin_pytest(pytester, *args, timeout=300):
    """An inner pytest with labctl's plugin (in a subprocess: labs are real)."""
    return pytester.runpytest_subprocess("-p", "labctl.pytest_plugin", "-p", "no:cacheprovider",
                                         *args, timeout=timeout)
