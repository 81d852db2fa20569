"""`labctl up`, `down`, `status` end to end, with iproute2 as an independent witness."""
import json
import os
import signal
import subprocess
import time

import pytest

import killpoints
from conftest import LABCTL, STATE_ROOT, run_labctl
from labfix import ip_json, netns_list, root_snapshot, star, unique_name

ROUTED = {
    "nodes": {
        "h1": {"interfaces": {"eth0": {"addresses": ["10.1.1.10/24", "fd00:1::10/64"],
                                       "mac": "02:00:00:00:01:10"}},
               "routes": [{"to": "default", "via": "10.1.1.1"}, {"to": "default", "via": "fd00:1::1"}]},
        "r1": {"kind": "router",
               "interfaces": {"lo": {"addresses": ["192.0.2.1/32"]},
                              "eth1": {"addresses": ["10.1.1.1/24", "fd00:1::1/64"]},
                              "eth2": {"addresses": ["10.1.12.1/30", "fd00:12::1/64"]}},
               "routes": [{"to": "10.1.3.0/24", "via": "10.1.12.2", "metric": 20},
                          {"to": "fd00:3::/64", "via": "fd00:12::2"}]},
        "r2": {"kind": "router",
               "interfaces": {"eth2": {"addresses": ["10.1.12.2/30", "fd00:12::2/64"]},
                              "eth3": {"addresses": ["10.1.3.1/24", "fd00:3::1/64"]}},
               "routes": [{"to": "10.1.1.0/24", "via": "10.1.12.1"}, {"to": "fd00:1::/64", "via": "fd00:12::1"},
                          {"to": "192.0.2.1/32", "via": "10.1.12.1"}]},
        "sw": {"kind": "switch", "interfaces": {"vm1": {"type": "tap", "owner": 1000, "group": 1001}}},
        "h3": {"interfaces": {"eth0": {"addresses": ["10.1.3.10/24", "fd00:3::10/64"]}},
               "routes": [{"to": "default", "via": "10.1.3.1"}, {"to": "default", "via": "fd00:3::1"}],
               "sysctls": {"net.ipv4.conf.eth0.rp_filter": "2"}},
    },
    "links": [
        {"endpoints": ["h1:eth0", "r1:eth1"]},
        {"endpoints": ["r1:eth2", "r2:eth2"], "mtu": 9000},
        {"endpoints": ["r2:eth3", "sw:p1"]},
        {"endpoints": ["sw:p2", "h3:eth0"]},
    ],
    "checks": [
        {"from": "h1", "to": "h3"},
        {"from": "h1", "to": "h3", "family": 6},
        {"from": "h3", "to": "r1"},
        {"from": "h1:eth0", "to": "203.0.113.9", "expect": "unreachable"},
    ],
}


def by_name(links):
    return {link["ifname"]: link for link in links}


def test_up_builds_what_the_topology_says(labs):
    before = root_snapshot()
    path, name = labs.write(ROUTED)
    r = run_labctl("up", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 passed, 0 failed" in r.stdout
    assert root_snapshot() == before, "the root namespace changed during up"

    assert sorted(n for n in netns_list() if n.startswith(name + "-")) == \
        sorted(f"{name}-{n}" for n in ROUTED["nodes"])
    h1 = by_name(ip_json(f"{name}-h1", "-d", "link", "show"))
    assert h1["eth0"]["address"] == "02:00:00:00:01:10"
    assert h1["eth0"]["operstate"] == "UP"
    assert h1["eth0"]["linkinfo"]["info_kind"] == "veth"
    # Made with one queue each way (no per-CPU queues cut back under RTNL), as the
    # kernel would have left it in use anyway.
    assert (h1["eth0"]["num_tx_queues"], h1["eth0"]["num_rx_queues"]) == (1, 1)
    sw_ends = by_name(ip_json(f"{name}-sw", "-d", "link", "show"))
    assert all((link["num_tx_queues"], link["num_rx_queues"]) == (1, 1)
               for link in sw_ends.values() if link.get("linkinfo", {}).get("info_kind") == "veth")
    addrs = {a["ifname"]: a for a in ip_json(f"{name}-h1", "addr", "show")}
    locals_ = [(i["local"], i["prefixlen"]) for i in addrs["eth0"]["addr_info"]]
    assert ("10.1.1.10", 24) in locals_ and ("fd00:1::10", 64) in locals_
    v6 = [i for i in addrs["eth0"]["addr_info"] if i["local"] == "fd00:1::10"][0]
    assert not v6.get("tentative"), "IPv6 address still tentative (NODAD not applied)"

    r1 = by_name(ip_json(f"{name}-r1", "link", "show"))
    assert r1["eth2"]["mtu"] == 9000
    r2 = by_name(ip_json(f"{name}-r2", "link", "show"))
    assert r2["eth2"]["mtu"] == 9000
    lo = {a["ifname"]: a for a in ip_json(f"{name}-r1", "addr", "show")}["lo"]
    assert "192.0.2.1" in [i["local"] for i in lo["addr_info"]]

    routes = ip_json(f"{name}-r1", "route", "show")
    assert {"dst": "10.1.3.0/24", "gateway": "10.1.12.2", "metric": 20}.items() <= \
        [x for x in routes if x["dst"] == "10.1.3.0/24"][0].items()
    r6 = ip_json(f"{name}-r1", "-6", "route", "show")
    assert any(x["dst"] == "fd00:3::/64" and x.get("gateway") == "fd00:12::2" for x in r6)
    h1routes = ip_json(f"{name}-h1", "route", "show")
    assert any(x["dst"] == "default" and x["gateway"] == "10.1.1.1" for x in h1routes)

    sw = by_name(ip_json(f"{name}-sw", "-d", "link", "show"))
    assert sw["br0"]["linkinfo"]["info_kind"] == "bridge"
    assert sw["br0"]["linkinfo"]["info_data"]["stp_state"] == 0
    assert sw["br0"]["linkinfo"]["info_data"]["forward_delay"] == 0
    # Off while the ports come up (cost), on again (the kernel's default) when up returns.
    assert sw["br0"]["linkinfo"]["info_data"]["mcast_snooping"] == 1
    for port in ("p1", "p2", "vm1"):
        assert sw[port]["master"] == "br0"
    assert sw["vm1"]["linkinfo"]["info_kind"] == "tun"
    assert sw["vm1"]["linkinfo"]["info_data"]["type"] == "tap"
    owner = subprocess.run(["ip", "netns", "exec", f"{name}-sw", "cat", "/sys/class/net/vm1/owner",
                            "/sys/class/net/vm1/group"], capture_output=True, text=True).stdout.split()
    assert owner == ["1000", "1001"]

    fwd = subprocess.run(["ip", "netns", "exec", f"{name}-r1", "sysctl", "-n", "net.ipv4.ip_forward",
                          "net.ipv6.conf.all.forwarding", "net.ipv6.conf.eth1.forwarding"],
                         capture_output=True, text=True).stdout.split()
    assert fwd == ["1", "1", "1"]
    hostfwd = subprocess.run(["ip", "netns", "exec", f"{name}-h1", "sysctl", "-n", "net.ipv4.ip_forward"],
                             capture_output=True, text=True).stdout.split()
    assert hostfwd == ["0"]
    rp = subprocess.run(["ip", "netns", "exec", f"{name}-h3", "sysctl", "-n", "net.ipv4.conf.eth0.rp_filter"],
                        capture_output=True, text=True).stdout.split()
    assert rp == ["2"]

    # status, in both forms, agrees with the witness.
    s = run_labctl("status", name, "--json")
    assert s.returncode == 0, s.stderr
    st = json.loads(s.stdout)
    assert st["up"] is True and st["state"] == "up"
    h1s = [n for n in st["nodes"] if n["name"] == "h1"][0]
    eth0 = [i for i in h1s["interfaces"] if i["name"] == "eth0"][0]
    assert "10.1.1.10/24" in eth0["addresses"] and eth0["state"] == "up"
    assert name in run_labctl("status").stdout

    # down removes everything, and is idempotent.
    assert root_snapshot() == before
    d = run_labctl("down", path)
    assert d.returncode == 0, d.stderr
    assert not [n for n in netns_list() if n.startswith(name + "-")]
    assert not os.path.exists(f"{STATE_ROOT}/{name}")
    assert run_labctl("down", name).returncode == 0
    assert root_snapshot() == before


def test_up_twice_is_refused_and_down_all_removes(labs, tmp_path):
    # A private state directory: `down --all` there sees only this test's labs.
    env = dict(os.environ, LABCTL_STATE_DIR=str(tmp_path / "state"))
    path, name = labs.write(star(2))
    other, other_name = labs.write(star(3))
    assert run_labctl("up", path, "--no-verify", env=env).returncode == 0
    r = run_labctl("up", path, env=env)
    assert r.returncode == 3 and "already up" in r.stderr
    # still intact
    assert len([n for n in netns_list() if n.startswith(name + "-")]) == 3
    assert run_labctl("up", other, "--no-verify", env=env).returncode == 0
    r = run_labctl("down", "--all", env=env)
    assert r.returncode == 0, r.stderr
    assert "removed 2 lab(s)" in r.stdout, r.stdout
    assert not [n for n in netns_list() if n.startswith((name + "-", other_name + "-"))]
    assert sorted(os.listdir(tmp_path / "state")) in ([], [".locks"])


def test_step_timings_are_printed_by_the_cli_only_when_asked(labs):
    """LABCTL_TIMINGS=1: the library reports each step's wall time, the CLI prints it."""
    path, name = labs.write(star(2))
    quiet = run_labctl("up", path, "--no-verify")
    assert quiet.returncode == 0, quiet.stderr
    assert " s\n" not in quiet.stderr, quiet.stderr
    assert run_labctl("down", name).returncode == 0
    timed = run_labctl("up", path, "--no-verify", env=dict(os.environ, LABCTL_TIMINGS="1"))
    assert timed.returncode == 0, timed.stderr
    steps = [line for line in timed.stderr.splitlines() if line.startswith("labctl: ") and line.endswith(" s")]
    assert any(line.startswith("labctl: creating veth pairs: ") for line in steps), timed.stderr
    assert any(line.startswith("labctl: creating namespaces: ") for line in steps), timed.stderr


def test_foreign_namespace_is_never_touched(labs):
    path, name = labs.write(star(2))
    foreign = f"{name}-h2"
    subprocess.run(["ip", "netns", "add", foreign], check=True)
    try:
        ino = os.stat(f"/run/netns/{foreign}").st_ino
        r = run_labctl("up", path)
        assert r.returncode == 3
        assert foreign in r.stderr and "already exists" in r.stderr
        assert os.stat(f"/run/netns/{foreign}").st_ino == ino
        assert [n for n in netns_list() if n.startswith(name + "-")] == [foreign]
        assert run_labctl("down", name).returncode == 0
        assert os.stat(f"/run/netns/{foreign}").st_ino == ino
    finally:
        subprocess.run(["ip", "netns", "del", foreign])


def test_failure_part_way_rolls_everything_back(labs):
    doc = star(3)
    # The kernel refuses this route only at the very end: its gateway is on a link that
    # is down, so there is no route to it.
    doc["nodes"]["h3"]["interfaces"] = {"eth0": {"addresses": ["10.0.3.1/8"], "up": False}}
    doc["nodes"]["h3"]["routes"] = [{"to": "10.200.0.0/16", "via": "10.0.0.254"}]
    path, name = labs.write(doc)
    before = root_snapshot()
    r = run_labctl("up", path)
    assert r.returncode == 3
    assert "h3: adding route 10.200.0.0/16 via 10.0.0.254" in r.stderr
    assert "(ENETUNREACH)" in r.stderr
    assert not [n for n in netns_list() if n.startswith(name + "-")]
    assert not os.path.exists(f"{STATE_ROOT}/{name}")
    assert root_snapshot() == before


def test_bad_topology_touches_nothing(labs, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": unique_name(), "nodes": {"a": {}}, "links": [{"endpoints": ["a:e", "b:e"]}]}))
    before = netns_list()
    r = run_labctl("up", bad)
    assert r.returncode == 2 and "/links/0/endpoints/1: no node \"b\"" in r.stderr
    assert netns_list() == before


def test_concurrent_up_of_one_lab_one_wins(labs):
    path, name = labs.write(star(20))
    procs = [subprocess.Popen([LABCTL, "up", str(path), "--no-verify"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 3], results
    assert any("already up" in err for _, err in results)
    assert len([n for n in netns_list() if n.startswith(name + "-")]) == 21


STAR_150 = killpoints.points_of_star(150)


def start_up(path):
    return subprocess.Popen([LABCTL, "up", str(path), "--no-verify"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("point", [0, 2, 4, 6], ids=lambda i: STAR_150[i][0].replace(" ", "-"))
def test_sigkill_during_up_then_down_leaves_nothing(labs, tmp_path, point):
    marker = tmp_path / "exec-started"
    path, name = labs.write(killpoints.star_with_exec(star(150), marker))
    p = start_up(path)
    try:
        killed_at = killpoints.stop_at(p, name, 150, STAR_150[point], marker)
    finally:
        killpoints.kill_stopped(p)
    assert not killed_at.complete, killed_at
    before_root = root_snapshot()
    r = run_labctl("down", name)
    assert r.returncode == 0, r.stderr
    assert not [n for n in netns_list() if n.startswith(name + "-")]
    assert not os.path.exists(f"{killpoints.state_root()}/{name}")
    mounts = open("/proc/self/mountinfo").read()
    assert f"/run/netns/{name}-" not in mounts
    assert root_snapshot() == before_root


def test_sigkill_during_up_then_up_again_works(labs, tmp_path):
    marker = tmp_path / "exec-started"
    path, name = labs.write(killpoints.star_with_exec(star(150), marker))
    p = start_up(path)
    try:
        killed_at = killpoints.stop_at(p, name, 150, STAR_150[5], marker)
    finally:
        killpoints.kill_stopped(p)
    assert killed_at.namespaces == 151 and not killed_at.complete, killed_at
    killpoints.release_exec(marker)
    r = run_labctl("up", path)
    assert r.returncode == 0, r.stderr
    assert "removed the leftovers of an interrupted `up`" in r.stderr, r.stderr
    assert len([n for n in netns_list() if n.startswith(name + "-")]) == 151
    assert run_labctl("down", name).returncode == 0
    assert not [n for n in netns_list() if n.startswith(name + "-")]


@pytest.mark.parametrize("sig,times,point", [(signal.SIGINT, 1, 2), (signal.SIGTERM, 1, 5),
                                             (signal.SIGINT, 2, 6), (signal.SIGTERM, 1, 7)])
def test_interrupted_up_rolls_back_by_itself(labs, tmp_path, sig, times, point):
    """The signal lands at an observed point of `up` (stopped there, signalled, resumed;
    at the last point an exec command is running, and gets the signal too): `up`
    finishes its step, removes everything and exits 3 saying it was interrupted."""
    points = killpoints.points_of_star(200)
    marker = tmp_path / "exec-started"
    path, name = labs.write(killpoints.star_with_exec(star(200), marker))
    p = start_up(path)
    try:
        at = killpoints.stop_at(p, name, 200, points[point], marker)
        assert not at.complete, at
        p.send_signal(sig)
    finally:
        p.send_signal(signal.SIGCONT)
    if times == 2:
        # The second signal while the removal is under way (namespaces going away).
        deadline = time.monotonic() + 60
        while killpoints.lab_namespace_count(name) >= at.namespaces and p.poll() is None:
            assert time.monotonic() < deadline, "the removal never started"
            time.sleep(0.001)
        p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 3 and "interrupted" in err, (p.returncode, err)
    assert not [n for n in netns_list() if n.startswith(name + "-")]
    assert not os.path.exists(f"{killpoints.state_root()}/{name}")


def test_pyroute2_sees_what_ip_sees(labs):
    """A second, independent witness (pyroute2 speaks netlink itself)."""
    pyroute2 = pytest.importorskip("pyroute2")
    path, name = labs.write(ROUTED)
    assert run_labctl("up", path, "--no-verify").returncode == 0
    ns = pyroute2.NetNS(f"{name}-r1")
    try:
        links = {link.get_attr("IFLA_IFNAME"): link for link in ns.get_links()}
        assert links["eth2"].get_attr("IFLA_MTU") == 9000
        assert links["eth1"].get_attr("IFLA_OPERSTATE") == "UP"
        addrs = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ns.get_addr()}
        assert {("10.1.1.1", 24), ("fd00:1::1", 64), ("10.1.12.1", 30), ("192.0.2.1", 32)} <= addrs
        routes = [(r.get_attr("RTA_DST"), r["dst_len"], r.get_attr("RTA_GATEWAY"), r.get_attr("RTA_PRIORITY"))
                  for r in ns.get_routes(family=2)]
        assert ("10.1.3.0", 24, "10.1.12.2", 20) in routes
    finally:
        ns.close()
