"""File descriptors (issue 20): what `verify` and `down` hold open does not grow with the
number of nodes. They work through a lab's namespaces in chunks sized from RLIMIT_NOFILE,
so a lab of 1,200 nodes verifies and goes down under a limit of 256 files (before, each
held a namespace fd per node at once and failed with EMFILE).

`up` is given the usual limit: it holds a namespace and a netlink socket per node.
"""
import json
import os
import resource
import shutil
import subprocess
import tempfile

from conftest import LABCTL, run_labctl
from labfix import unique_name

NODES = 1200      # the switch, SENDERS hosts on it, the rest unconnected hosts
SENDERS = 150     # more sources than one wave may hold under LOW (64 namespaces)
DAEMONS = 80      # more than one chunk of daemons under LOW
LOW = 256         # soft and hard RLIMIT_NOFILE of verify and down
BUILD = 1024      # ... of up and apply (building holds 256 nodes' namespaces and sockets)


def low_fd_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW, LOW))


def build_fd_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (BUILD, BUILD))


def lab_doc():
    nodes = {"sw": {"kind": "switch"}}
    links = []
    for i in range(1, SENDERS + 1):
        nodes[f"a{i}"] = {"interfaces": {"eth0": {"addresses": [f"10.40.{i // 250}.{i % 250 + 1}/16"]}}}
        links.append({"endpoints": [f"sw:p{i}", f"a{i}:eth0"]})
    for i in range(1, NODES - SENDERS):
        nodes[f"h{i}"] = {"daemons": [["sleep", "600"]]} if i <= DAEMONS else {}
    checks = [{"from": f"a{i}", "to": f"a{i % SENDERS + 1}", "count": 1} for i in range(1, SENDERS + 1)]
    # Other kinds among the pings: the results must come back in file order.
    checks.insert(SENDERS // 2, {"name": "a command", "on": "a1", "run": ["true"]})
    checks.insert(SENDERS // 3, {"from": "a2", "to": "203.0.113.9", "expect": "unreachable", "count": 1})
    assert len(nodes) == NODES
    return {"nodes": nodes, "links": links, "checks": checks}


def namespaces_of(name):
    return [n for n in os.listdir("/run/netns") if n.startswith(name + "-")]


def processes_in(identities):
    """The pids whose network namespace is one of `identities` ((st_dev, st_ino) pairs)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            st = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in identities:
            out.append(pid)
    return out


def test_verify_and_down_of_a_big_lab_fit_a_small_fd_limit(tmp_path):
    state = tempfile.mkdtemp(prefix="labctl-fd-")
    os.rmdir(state)  # labctl makes it (mode 0700)
    env = dict(os.environ, LABCTL_STATE_DIR=state)
    name = unique_name("fd")
    doc = dict(lab_doc(), name=name)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(doc))
    try:
        r = subprocess.run([LABCTL, "up", str(path), "--no-verify"], capture_output=True, text=True, env=env,
                           timeout=300, preexec_fn=build_fd_limit)
        assert r.returncode == 0, r.stderr
        assert len(namespaces_of(name)) == NODES
        # apply reads every namespace of the lab (a chunk at a time) and adds one host.
        doc["nodes"]["extra"] = {}
        path.write_text(json.dumps(doc))
        r = subprocess.run([LABCTL, "apply", str(path)], capture_output=True, text=True, env=env, timeout=300,
                           preexec_fn=build_fd_limit)
        assert r.returncode == 0, r.stderr
        assert len(namespaces_of(name)) == NODES + 1
        daemon_ns = {(st.st_dev, st.st_ino) for st in
                     (os.stat(f"/run/netns/{name}-h{i}") for i in range(1, DAEMONS + 1))}
        assert len(processes_in(daemon_ns)) >= DAEMONS

        r = subprocess.run([LABCTL, "verify", name, "--json"], capture_output=True, text=True, env=env,
                           timeout=120, preexec_fn=low_fd_limit)
        assert r.returncode == 0, r.stderr + r.stdout[-2000:]
        results = json.loads(r.stdout)["checks"]
        assert len(results) == len(doc["checks"])
        for got, check in zip(results, doc["checks"]):  # in file order
            if "run" in check:
                assert (got["kind"], got["name"], got["on"]) == ("command", check["name"], check["on"])
            else:
                assert (got["kind"], got["src"], got["dst"]) == ("ping", check["from"], check["to"])
        assert all(c["ok"] for c in results), [c for c in results if not c["ok"]][:3]

        r = subprocess.run([LABCTL, "down", name], capture_output=True, text=True, env=env, timeout=120,
                           preexec_fn=low_fd_limit)
        assert r.returncode == 0, r.stderr
        assert namespaces_of(name) == []
        assert processes_in(daemon_ns) == []
        assert not os.path.lexists(os.path.join(state, name))
    finally:
        run_labctl("down", "--all", env=env, timeout=300)
        for ns in namespaces_of(name):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(state, ignore_errors=True)
