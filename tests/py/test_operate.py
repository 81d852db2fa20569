"""Operating a running lab (docs/operate.md): instances, apply, link/impair/node, Python."""
import copy
import json
import os
import subprocess

import pytest

import labctl
from conftest import LABCTL, run_labctl
from labfix import ip_json, netns_list, star, unique_name


def base(name):
    """h1 - r1 - h2, IPv4 and IPv6, routes both ways, a daemon on r1."""
    return {
        "name": name,
        "nodes": {
            "h1": {"interfaces": {"eth0": {"addresses": ["10.0.1.10/24", "fd00:1::10/64"]}},
                   "routes": [{"to": "default", "via": "10.0.1.1"}, {"to": "default", "via": "fd00:1::1"}]},
            "r1": {"kind": "router",
                   "interfaces": {"eth1": {"addresses": ["10.0.1.1/24", "fd00:1::1/64"]},
                                  "eth2": {"addresses": ["10.0.2.1/24", "fd00:2::1/64"]}},
                   "daemons": [["sleep", "3600"]]},
            "h2": {"interfaces": {"eth0": {"addresses": ["10.0.2.10/24", "fd00:2::10/64"]}},
                   "routes": [{"to": "default", "via": "10.0.2.1"}, {"to": "default", "via": "fd00:2::1"}]},
        },
        "links": [{"endpoints": ["h1:eth0", "r1:eth1"]}, {"endpoints": ["r1:eth2", "h2:eth0"]}],
        "checks": [{"from": "h1", "to": "h2"}, {"from": "h1", "to": "fd00:2::10"}],
    }


def ns_inode(ns):
    return os.stat(f"/run/netns/{ns}").st_ino


def ifindex(ns, ifname):
    return ip_json(ns, "link", "show", ifname)[0]["ifindex"]


def addresses(ns, ifname):
    return [f"{a['local']}/{a['prefixlen']}" for a in ip_json(ns, "addr", "show", ifname)[0]["addr_info"]
            if a.get("scope") != "link"]


def daemon_pids(name, node):
    st = json.loads(run_labctl("status", name, "--json").stdout)
    return [d["pid"] for n in st["nodes"] if n["name"] == node for d in n["daemons"] if d["running"]]


def root_qdisc(ns, dev):
    """The kind of the interface's root qdisc, as tc sees it."""
    out = subprocess.run(["ip", "netns", "exec", ns, "tc", "-j", "qdisc", "show", "dev", dev],
                         capture_output=True, text=True, check=True).stdout
    return next((q["kind"] for q in json.loads(out or "[]") if q.get("root")), None)


def alive(pid):
    """Running (a zombie waiting for its reaper is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def up(labs, doc, *extra):
    path, name = labs.write(doc)
    r = run_labctl("up", path, "--no-verify", *extra)
    assert r.returncode == 0, r.stderr
    return path, name


def test_instances_run_one_file_many_times(labs):
    path, name = labs.write(base(unique_name("f")))
    a, b = unique_name("ia"), unique_name("ib")
    labs.names.update({a, b})
    for inst in (a, b):
        r = run_labctl("up", path, "--name", inst)
        assert r.returncode == 0, r.stderr
    assert {f"{a}-h1", f"{b}-h1", f"{a}-r1", f"{b}-r1"} <= set(netns_list())
    assert not any(ns.startswith(name + "-") for ns in netns_list())
    assert run_labctl("verify", path, "--name", a).returncode == 0
    assert run_labctl("down", path, "--name", a).returncode == 0
    assert not any(ns.startswith(a + "-") for ns in netns_list())
    assert f"{b}-h1" in netns_list()
    assert labctl.Lab.attach(b).name == b


def test_colliding_namespace_names_are_refused_naming_the_other_lab(labs):
    first = unique_name("c")
    second = first + "-x"  # lab `first` node `x-h1` and lab `first-x` node `h1` share a namespace
    doc1 = {"name": first, "nodes": {"x-h1": {}}, "links": []}
    doc2 = {"name": second, "nodes": {"h1": {}}, "links": []}
    up(labs, doc1)
    path2, _ = labs.write(doc2)
    r = run_labctl("up", path2)
    assert r.returncode == 3
    assert f"belongs to lab {first}" in r.stderr
    assert run_labctl("status", second).returncode != 0 or "not up" in run_labctl("status", second).stderr
    assert f"{first}-x-h1" in netns_list()


def test_apply_changes_only_what_differs(labs):
    doc = base(unique_name("ap"))
    path, name = up(labs, doc)
    inode_h1, inode_r1 = ns_inode(f"{name}-h1"), ns_inode(f"{name}-r1")
    idx_h1, idx_r1 = ifindex(f"{name}-h1", "eth0"), ifindex(f"{name}-r1", "eth1")
    pids = daemon_pids(name, "r1")
    assert len(pids) == 1

    new = copy.deepcopy(doc)
    new["nodes"]["h1"]["interfaces"]["eth0"]["addresses"] = ["10.0.1.12/24", "fd00:1::10/64"]
    new["nodes"]["h3"] = {"interfaces": {"eth0": {"addresses": ["10.0.3.10/24"]}},
                          "routes": [{"to": "default", "via": "10.0.3.1"}]}
    new["nodes"]["r1"]["interfaces"]["eth3"] = {"addresses": ["10.0.3.1/24"]}
    new["links"].append({"endpoints": ["h3:eth0", "r1:eth3"]})
    new["checks"].append({"from": "h3", "to": "h1"})
    path.write_text(json.dumps(new))

    dry = run_labctl("apply", path, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    expected = ["+ node h3", "+ link h3:eth0 <-> r1:eth3",
                "~ h1:eth0 addresses +10.0.1.12/24 -10.0.1.10/24"]
    assert dry.stdout.splitlines() == expected
    assert f"{name}-h3" not in netns_list() and "10.0.1.10/24" in addresses(f"{name}-h1", "eth0")

    r = run_labctl("apply", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[:3] == expected
    assert "3 passed, 0 failed" in r.stdout
    # Untouched: namespaces, interfaces (a changed address is changed in place), processes.
    assert ns_inode(f"{name}-h1") == inode_h1 and ns_inode(f"{name}-r1") == inode_r1
    assert ifindex(f"{name}-h1", "eth0") == idx_h1 and ifindex(f"{name}-r1", "eth1") == idx_r1
    assert daemon_pids(name, "r1") == pids
    assert addresses(f"{name}-h1", "eth0") == ["10.0.1.12/24", "fd00:1::10/64"]
    # The default route through the changed address is there again.
    assert any(rt.get("dst") == "default" for rt in ip_json(f"{name}-h1", "route", "show"))

    again = run_labctl("apply", path, "--no-verify")
    assert again.returncode == 0 and again.stdout.strip() == "no changes"
    # verify of the file it now runs is fine; of the old file, refused.
    assert run_labctl("verify", path).returncode == 0
    old, _ = labs.write(doc)
    refused = run_labctl("verify", old)
    assert refused.returncode == 2
    assert f"lab {name} runs a different topology; apply it first" in refused.stderr

    # Changed daemons restart; changed impairment-free links stay.
    new["nodes"]["r1"]["daemons"] = [["sleep", "3601"]]
    path.write_text(json.dumps(new))
    r = run_labctl("apply", path, "--no-verify", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [c["line"] for c in out["changes"]] == ["~ r1 daemons restarted"]
    new_pids = daemon_pids(name, "r1")
    assert len(new_pids) == 1 and new_pids != pids
    assert not alive(pids[0])


def test_apply_repairs_a_hand_deleted_address(labs):
    path, name = up(labs, base(unique_name("rp")))
    subprocess.run(["ip", "-n", f"{name}-r1", "addr", "del", "10.0.2.1/24", "dev", "eth2"], check=True)
    r = run_labctl("apply", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[0] == "~ r1:eth2 addresses +10.0.2.1/24"
    assert "10.0.2.1/24" in addresses(f"{name}-r1", "eth2")


def test_apply_of_an_invalid_file_touches_nothing(labs):
    doc = base(unique_name("iv"))
    path, name = up(labs, doc)
    bad = copy.deepcopy(doc)
    bad["links"].append({"endpoints": ["h1:eth9", "r9:eth0"]})
    path.write_text(json.dumps(bad))
    r = run_labctl("apply", path)
    assert r.returncode == 2
    assert "/links/2/endpoints/1" in r.stderr


def test_apply_failing_part_way_returns_to_the_previous_topology(labs):
    doc = base(unique_name("fl"))
    path, name = up(labs, doc)
    new = copy.deepcopy(doc)
    new["nodes"]["h1"]["interfaces"]["eth0"]["addresses"] = ["10.0.1.99/24", "fd00:1::10/64"]
    new["nodes"]["h3"] = {"interfaces": {"eth0": {"addresses": ["10.0.3.10/24"]}}, "exec": [["false"]]}
    new["nodes"]["r1"]["interfaces"]["eth3"] = {"addresses": ["10.0.3.1/24"]}
    new["links"].append({"endpoints": ["h3:eth0", "r1:eth3"]})
    path.write_text(json.dumps(new))
    r = run_labctl("apply", path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "back to the topology it ran before" in r.stderr
    assert f"{name}-h3" not in netns_list()
    assert addresses(f"{name}-h1", "eth0") == ["10.0.1.10/24", "fd00:1::10/64"]
    assert not any(item["ifname"] == "eth3" for item in ip_json(f"{name}-r1", "link", "show"))
    assert run_labctl("verify", name).returncode == 0


def test_link_down_and_up(labs):
    path, name = up(labs, base(unique_name("ld")))
    r = run_labctl("link", name, "h1:eth0", "down")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "~ link h1:eth0 <-> r1:eth1 down (h1:eth0)"
    peer = ip_json(f"{name}-r1", "link", "show", "eth1")[0]
    assert "NO-CARRIER" in peer["flags"]
    st = json.loads(run_labctl("status", name, "--json").stdout)
    assert st["runtime"]["links_down"] == ["h1:eth0"]
    assert "runtime: link h1:eth0 down" in run_labctl("status", name).stdout
    assert run_labctl("verify", name).returncode == 1
    # Either end names the link.
    r = run_labctl("link", name, "r1:eth1", "up")
    assert r.returncode == 0, r.stderr
    assert addresses(f"{name}-h1", "eth0") == ["10.0.1.10/24", "fd00:1::10/64"]  # IPv6 back
    routes6 = ip_json(f"{name}-h1", "-6", "route", "show")
    assert any(rt.get("dst") == "default" and rt.get("gateway") == "fd00:1::1" for rt in routes6)
    assert run_labctl("verify", name).returncode == 0
    st = json.loads(run_labctl("status", name, "--json").stdout)
    assert st["runtime"]["links_down"] == []
    assert run_labctl("link", name, "h9:eth0", "down").returncode == 2  # bad input: nothing touched


def test_node_stop_start_and_apply_undoes_runtime_changes(labs):
    path, name = up(labs, base(unique_name("nd")))
    pids = daemon_pids(name, "r1")
    r = run_labctl("node", name, "r1", "stop")
    assert r.returncode == 0 and r.stdout.strip() == "~ node r1 stopped", r.stderr
    assert daemon_pids(name, "r1") == []
    assert "NO-CARRIER" in ip_json(f"{name}-h1", "link", "show", "eth0")[0]["flags"]
    st = json.loads(run_labctl("status", name, "--json").stdout)
    assert st["runtime"]["nodes_stopped"] == ["r1"]
    r = run_labctl("node", name, "r1", "start")
    assert r.returncode == 0, r.stderr
    new_pids = daemon_pids(name, "r1")
    assert len(new_pids) == 1 and new_pids != pids
    assert run_labctl("verify", name).returncode == 0
    # apply makes the lab the file again: a pulled cable is plugged back.
    assert run_labctl("link", name, "r1:eth2", "down").returncode == 0
    r = run_labctl("apply", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "~ link r1:eth2 <-> h2:eth0 up (r1:eth2)" in r.stdout.splitlines()
    assert json.loads(run_labctl("status", name, "--json").stdout)["runtime"]["links_down"] == []


def test_python_instances_apply_and_runtime_changes(labs, tmp_path):
    doc = base(unique_name("py"))
    inst = unique_name("pi")
    labs.names.add(inst)
    lab = labctl.Lab(doc, name=inst)
    assert lab.name == inst
    with lab:
        new = copy.deepcopy(doc)
        new["nodes"]["h1"]["interfaces"]["eth0"]["addresses"] = ["10.0.1.12/24", "fd00:1::10/64"]
        changes = lab.apply(new, dry_run=True)
        assert [str(c) for c in changes] == ["~ h1:eth0 addresses +10.0.1.12/24 -10.0.1.10/24"]
        assert (changes[0].op, changes[0].kind, changes[0].target) == ("~", "interface", "h1:eth0")
        assert lab.apply(new) == changes
        assert lab.apply(new) == []
        with lab.link_down("h1:eth0") as pulled:
            assert str(pulled[0]) == "~ link h1:eth0 <-> r1:eth1 down (h1:eth0)"
            assert not lab.ping("h1", "h2", count=1, timeout=0.3).ok
        assert lab.ping("h1", "h2", count=1).ok
        assert lab.ping("h1", "fd00:2::10", count=1).ok
        lab.node_restart("r1")
        assert lab.ping("h1", "h2", count=1).ok
        assert lab.status()["runtime"] == {"links_down": [], "impaired": {}, "nodes_stopped": []}
    assert not any(ns.startswith(inst + "-") for ns in netns_list())


@pytest.mark.kernel("netem")
def test_impair_at_runtime_on_both_ends_and_clear(labs):
    path, name = up(labs, base(unique_name("im")))
    r = run_labctl("impair", name, "h1:eth0", "--delay", "40")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "~ link h1:eth0 <-> r1:eth1 impair delay_ms none -> 40"
    for ns, dev in ((f"{name}-h1", "eth0"), (f"{name}-r1", "eth1")):
        assert root_qdisc(ns, dev) == "netem"
    p = labctl.Lab.attach(name).ping("h1", "r1", count=2)
    assert p.ok and min(p.rtt_ms) >= 80  # 40 ms each way
    st = json.loads(run_labctl("status", name, "--json").stdout)
    assert st["runtime"]["impaired"] == {"h1:eth0 <-> r1:eth1": {"delay_ms": 40.0}}
    r = run_labctl("impair", name, "r1:eth1", "--clear")
    assert r.returncode == 0 and r.stdout.strip() == "~ link h1:eth0 <-> r1:eth1 impair delay_ms 40 -> none"
    assert root_qdisc(f"{name}-h1", "eth0") != "netem" and root_qdisc(f"{name}-r1", "eth1") != "netem"


def test_link_failure_lab_fails_over_when_the_cable_is_pulled():
    """labs/link-failure: traffic between the LANs moves to the backup path and back."""
    path = os.path.join(os.path.dirname(__file__), "..", "..", "labs", "link-failure", "topology.json")
    name = unique_name("lf")

    def via(lab, node, dst):
        return lab.exec(node, ["ip", "-j", "route", "get", dst], check=True).stdout

    with labctl.Lab(path, name=name) as lab:
        assert '"gateway":"10.0.12.2"' in via(lab, "r1", "10.0.2.10")
        with lab.link_down("r1:eth1"):
            assert '"gateway":"10.0.13.2"' in via(lab, "r1", "10.0.2.10")
            assert '"gateway":"10.0.23.2"' in via(lab, "r2", "10.0.1.10")  # the linkdown route is ignored
            assert all(c.ok for c in lab.verify())
        assert '"gateway":"10.0.12.2"' in via(lab, "r1", "10.0.2.10")
        assert all(c.ok for c in lab.verify())
    assert not any(ns.startswith(name + "-") for ns in netns_list())


@pytest.mark.parametrize("delay", [0.02, 0.1, 0.25, 0.5])
def test_a_killed_apply_is_finished_by_the_next_and_removed_by_down(labs, delay):
    """SIGKILL part-way through a large apply: a new apply finishes the job, down removes all."""
    import time

    name = unique_name("k")
    path, name = up(labs, dict(star(30, checks=False), name=name))
    path.write_text(json.dumps(dict(star(90, checks=False), name=name)))
    p = subprocess.Popen([LABCTL, "apply", str(path), "--no-verify"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    p.kill()
    p.wait()
    r = run_labctl("apply", path, "--no-verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert run_labctl("apply", path, "--no-verify").stdout.strip() == "no changes"
    assert len([ns for ns in netns_list() if ns.startswith(name + "-")]) == 91
    assert run_labctl("down", name).returncode == 0
    assert not [ns for ns in netns_list() if ns.startswith(name + "-")]


def daemons_of(name, node):
    st = json.loads(run_labctl("status", name, "--json").stdout)
    return [d for n in st["nodes"] if n["name"] == node for d in n["daemons"]]


def test_apply_waits_until_a_changed_daemon_is_ready(labs, tmp_path):
    doc = base(unique_name("aw"))
    path, name = up(labs, doc)
    marker = tmp_path / "ready-marker"
    new = copy.deepcopy(doc)
    new["nodes"]["r1"]["daemons"] = [{"run": ["sh", "-c", f"sleep 1; touch {marker}; exec sleep 3600"],
                                      "ready": {"run": ["test", "-e", str(marker)]}}]
    path.write_text(json.dumps(new))
    r = run_labctl("apply", path, "--no-verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "~ r1 daemons restarted" in r.stdout.splitlines()
    # apply returned only once the new daemon said it was ready.
    assert marker.exists()
    assert [d["state"] for d in daemons_of(name, "r1")] == ["running"]


def test_apply_whose_new_daemon_dies_returns_to_the_old_daemon(labs):
    doc = base(unique_name("ad"))
    path, name = up(labs, doc)
    old_pids = daemon_pids(name, "r1")
    new = copy.deepcopy(doc)
    new["nodes"]["r1"]["daemons"] = [{"run": ["sh", "-c", "echo boom-from-daemon; exit 7"], "ready": {"port": 9}}]
    path.write_text(json.dumps(new))
    r = run_labctl("apply", path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "exited with status 7" in r.stderr and "boom-from-daemon" in r.stderr, r.stderr
    assert "back to the topology it ran before" in r.stderr
    # The old daemon runs again (a new process: the apply stopped the old one).
    running = [d for d in daemons_of(name, "r1") if d["state"] == "running"]
    assert [d["argv"] for d in running] == [["sleep", "3600"]], daemons_of(name, "r1")
    assert running[0]["pid"] not in old_pids or alive(running[0]["pid"])
    assert run_labctl("verify", name).returncode == 0


def test_node_start_runs_relative_commands_from_the_files_folder_and_waits(labs, tmp_path):
    """`node start` from another working directory: the daemon's relative path is looked up
    in the topology file's folder, and start returns once it is ready; a daemon that cannot
    start leaves the node stopped, exit 3."""
    doc = base(unique_name("ns"))
    script = tmp_path / "d.sh"
    script.write_text(f"#!/bin/sh\nsleep 0.5\ntouch {tmp_path}/up-$$\nexec sleep 3600\n")
    script.chmod(0o755)
    doc["nodes"]["r1"]["daemons"] = [{"run": ["./d.sh"], "ready": {"run": ["sh", "-c", f"ls {tmp_path}/up-*"]}}]
    path, name = labs.write(doc)
    r = subprocess.run([LABCTL, "up", path.name, "--no-verify"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert run_labctl("node", name, "r1", "stop").returncode == 0
    for f in tmp_path.glob("up-*"):
        f.unlink()
    r = subprocess.run([LABCTL, "node", name, "r1", "start"], cwd="/", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert list(tmp_path.glob("up-*")), "start returned before the daemon was ready"
    assert [d["state"] for d in daemons_of(name, "r1")] == ["running"]
    # A daemon that dies on start: the node stays off, and the error names the daemon.
    assert run_labctl("node", name, "r1", "stop").returncode == 0
    script.write_text("#!/bin/sh\necho cannot-start >&2\nexit 4\n")
    r = subprocess.run([LABCTL, "node", name, "r1", "start"], cwd="/", capture_output=True, text=True)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "./d.sh" in r.stderr and "exited with status 4" in r.stderr and "cannot-start" in r.stderr, r.stderr
    st = json.loads(run_labctl("status", name, "--json").stdout)
    assert st["runtime"]["nodes_stopped"] == ["r1"]
    assert "NO-CARRIER" in ip_json(f"{name}-h1", "link", "show", "eth0")[0]["flags"]


def test_a_node_removed_by_apply_is_gone_for_later_runtime_changes(labs):
    doc = base(unique_name("rm"))
    doc["nodes"]["h3"] = {"interfaces": {"eth0": {"addresses": ["10.0.3.10/24"]}}}
    doc["nodes"]["r1"]["interfaces"]["eth3"] = {"addresses": ["10.0.3.1/24"]}
    doc["links"].append({"endpoints": ["h3:eth0", "r1:eth3"]})
    path, name = up(labs, doc)
    new = base(name)
    path.write_text(json.dumps(new))
    r = run_labctl("apply", path, "--no-verify")
    assert r.returncode == 0, r.stderr
    assert "- node h3" in r.stdout.splitlines()
    assert f"{name}-h3" not in netns_list()
    # The journal knows h3 is gone: a runtime change says (and does) only its own change.
    r = run_labctl("link", name, "h1:eth0", "down")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["~ link h1:eth0 <-> r1:eth1 down (h1:eth0)"]
    r = run_labctl("link", name, "h1:eth0", "up")
    assert r.stdout.splitlines() == ["~ link h1:eth0 <-> r1:eth1 up (h1:eth0)"], r.stdout
    st = json.loads(run_labctl("status", name, "--json").stdout)
    assert sorted(n["name"] for n in st["nodes"]) == ["h1", "h2", "r1"]
    assert run_labctl("down", name).returncode == 0
    assert not [n for n in netns_list() if n.startswith(name + "-")]


def test_bad_names_are_bad_input_and_the_hints_name_the_instance(labs):
    path, _ = labs.write(base(unique_name("bn")))
    for cmd in ("up", "apply", "verify", "down"):
        r = run_labctl(cmd, path, "--name", "BAD_X")
        assert r.returncode == 2 and "is not a lab name" in r.stderr, (cmd, r.returncode, r.stderr)
    with pytest.raises(labctl.Error, match="is not a lab name"):
        labctl.Lab(str(path), name="BAD_X")
    inst = unique_name("bi")
    labs.names.add(inst)
    assert run_labctl("up", path, "--name", inst, "--no-verify").returncode == 0
    edited = json.loads(path.read_text())
    edited["nodes"]["h1"]["interfaces"]["eth0"]["addresses"] = ["10.0.1.11/24", "fd00:1::10/64"]
    path.write_text(json.dumps(edited))
    r = run_labctl("verify", path, "--name", inst)
    assert r.returncode == 2
    assert f"apply it first (labctl apply {path} --name {inst})" in r.stderr, r.stderr
    # Python refuses the same: the lab does not run this file.
    with pytest.raises(labctl.LabError, match="runs a different topology"):
        labctl.Lab(str(path), name=inst).verify()


def test_apply_json_scores_and_status_names_the_applied_file(labs, tmp_path):
    doc = base(unique_name("aj"))
    path, name = up(labs, doc)
    new = copy.deepcopy(doc)
    new["checks"][0]["points"] = 3
    other = tmp_path / "other.json"
    other.write_text(json.dumps(new))
    r = run_labctl("apply", other, "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["score"] == 4 and j["max_score"] == 4 and j["ok"] is True and j["changes"] == []
    st = json.loads(run_labctl("status", name, "--json").stdout)
    assert st["source"] == str(other)


def test_a_restarted_daemon_failure_quotes_only_its_own_output(labs):
    doc = base(unique_name("lo"))
    path, name = up(labs, doc)
    new = copy.deepcopy(doc)
    new["nodes"]["h3"] = {"interfaces": {"eth0": {"addresses": ["10.0.3.10/24"]}},
                          "daemons": [{"run": ["sh", "-c", "echo h3-dying; exit 3"], "ready": {"port": 9}}]}
    new["nodes"]["r1"]["interfaces"]["eth3"] = {"addresses": ["10.0.3.1/24"]}
    new["links"].append({"endpoints": ["h3:eth0", "r1:eth3"]})
    path.write_text(json.dumps(new))
    for attempt in (1, 2):
        r = run_labctl("apply", path)
        assert r.returncode == 3, r.stdout + r.stderr
        # (The daemon's argv names it too; its output is the indented lines.)
        assert [ln.strip() for ln in r.stderr.splitlines()].count("h3-dying") == 1, (attempt, r.stderr)
        assert "exited with status 3" in r.stderr
        # The outcome is on a line of its own, not glued to the daemon's last line.
        assert f"lab {name} is back to the topology it ran before" in [ln.strip() for ln in r.stderr.splitlines()]


def test_a_lab_without_checks_ends_its_report_like_any_other(labs):
    doc = base(unique_name("nc"))
    doc["checks"] = []
    path, name = labs.write(doc)
    r = run_labctl("up", path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "0 passed, 0 failed"
    assert run_labctl("verify", name).stdout.splitlines()[-1] == "0 passed, 0 failed"
