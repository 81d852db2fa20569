"""Helpers for end-to-end tests: unique lab names, topology files, witnesses, cleanup."""
import itertools
import json
import os
import subprocess

import pytest

from conftest import run_labctl

_counter = itertools.count()


def unique_name(prefix="t"):
    """A lab name no other test (or concurrent run) uses: ^[a-z][a-z0-9-]{0,15}$."""
    return f"{prefix}{os.getpid() % 100000}x{next(_counter)}"[:16]


def netns_list():
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout
    return [n["name"] for n in json.loads(out or "[]")]


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


@pytest.fixture
def labs(tmp_path):
    l = Labs(tmp_path)
    try:
        yield l
    finally:
        l.cleanup()


def star(n_hosts, prefix="10.0.0", checks=True):
    """A switch with n_hosts hosts, addresses prefix.(i+1)/24 (i < 250)."""
    nodes = {"sw": {"kind": "switch"}}
    links = []
    for i in range(1, n_hosts + 1):
        nodes[f"h{i}"] = {"interfaces": {"eth0": {"addresses": [f"10.{i // 250}.{i % 250}.1/8"]}}}
        links.append({"endpoints": [f"sw:p{i}", f"h{i}:eth0"]})
    doc = {"nodes": nodes, "links": links}
    if checks and n_hosts >= 2:
        doc["checks"] = [{"from": "h1", "to": f"h{n_hosts}"}]
    return doc
