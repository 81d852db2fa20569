"""What a new user trips over, through the CLI: validation that prevents false
passes, missing namespaces, JSON errors and results, messages, exit codes, status details,
graph of a running lab, ping's Ctrl-C, -i, -4/-6, all-pairs in every family."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import LABCTL, ROOT, run_labctl
from labfix import Labs, ip_json, netns_list, unique_name


def dual(name):
    """h1 (dual-stack) - r1 - h2 (IPv4 only); h2 runs a daemon that stays and one that exits."""
    return {
        "name": name,
        "description": "polish lab",
        "nodes": {
            "h1": {"interfaces": {"eth0": {"addresses": ["10.0.1.10/24", "fd00:1::10/64"]}},
                   "routes": [{"to": "default", "via": "10.0.1.1"}, {"to": "default", "via": "fd00:1::1"}]},
            "r1": {"kind": "router",
                   "interfaces": {"eth1": {"addresses": ["10.0.1.1/24", "fd00:1::1/64"]},
                                  "eth2": {"addresses": ["10.0.2.1/24"]}}},
            "h2": {"interfaces": {"eth0": {"addresses": ["10.0.2.10/24"]}},
                   "routes": [{"to": "default", "via": "10.0.2.1"}],
                   "daemons": [["sleep", "600"], ["sh", "-c", "sleep 0.5; exit 3"]]},
        },
        "links": [{"endpoints": ["h1:eth0", "r1:eth1"], "mtu": 1400},
                  {"endpoints": ["r1:eth2", "h2:eth0"]}],
        "checks": [{"from": "h1", "to": "h2"},
                   {"from": "h1", "to": "203.0.113.9", "expect": "unreachable"}],
    }


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One running lab for the read-only tests of this module."""
    labs = Labs(tmp_path_factory.mktemp("polish"))
    try:
        path, name = labs.write(dual(unique_name("po")))
        r = run_labctl("up", path)
        assert r.returncode == 0, r.stdout + r.stderr
        yield path, name
    finally:
        labs.cleanup()


def json_out(r):
    return json.loads(r.stdout)


# --- 3-4: validation that prevents false passes and late failures -------------------------

def test_quickstart_with_a_duplicate_address_is_refused_with_both_pointers(tmp_path):
    doc = json.loads((ROOT / "labs" / "quickstart" / "topology.json").read_text())
    doc["nodes"]["h2"]["interfaces"]["eth0"]["addresses"][0] = "10.0.1.10/24"
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(doc))
    r = run_labctl("validate", path)
    assert r.returncode == 2
    assert (f"labctl: {path}: /nodes/h2/interfaces/eth0/addresses/0: 10.0.1.10 is already the address at "
            "/nodes/h1/interfaces/eth0/addresses/0") in r.stderr


def test_gateway_off_every_link_is_refused_before_up(tmp_path):
    doc = dual("x")
    doc["nodes"]["h2"]["routes"][0]["via"] = "10.0.1.1"
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(doc))
    r = run_labctl("up", path, "--json")
    assert r.returncode == 2
    err = json_out(r)
    assert err["errors"] == [{"pointer": "/nodes/h2/routes/0/via", "message": err["errors"][0]["message"]}]
    assert "connected prefixes" in err["errors"][0]["message"]


# --- 7-8: --json errors and results --------------------------------------------------------

@pytest.mark.parametrize("args", [["status", "nosuchlab", "--json"], ["verify", "nosuchlab", "--json"],
                                  ["ping", "nosuchlab", "h1", "h2", "--json"]])
def test_json_error_of_an_unknown_lab(args):
    r = run_labctl(*args)
    assert r.returncode == 2, r.stderr
    assert json_out(r) == {"error": "lab nosuchlab is not up", "errors": []}
    assert r.stderr == "labctl: lab nosuchlab is not up\n"


def test_validate_json_good_and_bad(tmp_path):
    good = ROOT / "labs" / "quickstart" / "topology.json"
    r = run_labctl("validate", good, "--json")
    assert r.returncode == 0
    assert json_out(r) == {"file": str(good), "valid": True, "lab": "quickstart", "nodes": 5, "links": 4,
                           "checks": 5}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "b", "nodes": {"h1": {}}, "links": [{"endpoints": ["h1:e", "r9:e"]}]}))
    r = run_labctl("validate", bad, "--json")
    assert r.returncode == 2
    assert json_out(r)["errors"] == [{"pointer": "/links/0/endpoints/1", "message": 'no node "r9"'}]


def test_json_error_of_a_usage_error():
    r = run_labctl("ping", "--json", "onlylab")
    assert r.returncode == 2
    assert json_out(r) == {"error": "FROM is required", "errors": []}
    assert r.stderr == "labctl: FROM is required\n  (see labctl ping --help)\n"


def test_verify_json_has_python_field_names_and_null_rtts(lab):
    _, name = lab
    r = run_labctl("verify", name, "--json")
    assert r.returncode == 0, r.stdout
    reach, unreach = json_out(r)["checks"]
    assert set(reach) >= {"src", "dst", "address", "expect", "ok", "sent", "received", "rtt_min_ms",
                          "rtt_avg_ms", "rtt_max_ms", "reason"}
    assert (reach["src"], reach["dst"], reach["ok"]) == ("h1", "h2", True)
    assert reach["rtt_avg_ms"] > 0
    assert unreach["received"] == 0
    assert unreach["rtt_min_ms"] is None and unreach["rtt_avg_ms"] is None and unreach["rtt_max_ms"] is None


def test_ping_json(lab):
    _, name = lab
    r = run_labctl("ping", name, "h1", "h2", "-c", "2", "--json")
    assert r.returncode == 0
    p = json_out(r)
    assert (p["src"], p["dst"], p["address"], p["sent"], p["received"], p["loss_pct"]) == \
        ("h1", "h2", "10.0.2.10", 2, 2, 0)
    assert len(p["rtt_ms"]) == 2 and p["rtt_min_ms"] <= p["rtt_max_ms"]
    r = run_labctl("ping", name, "h1", "203.0.113.9", "-c", "1", "-W", "0.3", "--json")
    assert r.returncode == 1
    p = json_out(r)
    assert p["received"] == 0 and p["rtt_ms"] == [] and p["rtt_avg_ms"] is None
    assert "unreachable" in p["reason"].lower()


# --- 6: the note of an unreachable check ---------------------------------------------------

def test_unreachable_note_names_the_routers_icmp_error(lab):
    _, name = lab
    notes = []
    for _ in range(2):
        r = run_labctl("verify", name, "--json")
        notes.append(json_out(r)["checks"][1]["reason"])
    # Twice within a second: a router's ICMP rate limit (1/s per destination by default)
    # would make the second "No reply"; lab namespaces have none.
    assert all(n.startswith("Destination net unreachable from 10.0.1.1") for n in notes), notes


# --- 9: messages ---------------------------------------------------------------------------

def test_unknown_subcommand_suggests_the_nearest():
    r = run_labctl("vaildate", "x.json")
    assert r.returncode == 2
    assert r.stderr == "labctl: unknown subcommand vaildate; did you mean validate?\n"
    r = run_labctl("frobnicate")
    assert r.returncode == 2 and r.stderr.startswith("labctl: unknown subcommand frobnicate")


def test_bare_labctl_prints_usage():
    r = run_labctl()
    assert r.returncode == 2
    assert "Usage" in r.stderr and "validate" in r.stderr and "doctor" in r.stderr


@pytest.mark.parametrize("args,words", [
    (["-c", "abc"], "abc is not a number"),
    (["-c", "1.5"], "1.5 is not a whole number"),
    (["-c", "0"], "count must be 1 to 65535"),
    (["-W", "x"], "x is not a number"),
    (["-i", "0"], "interval must be"),
])
def test_bad_numbers_are_named(args, words):
    r = run_labctl("ping", "somelab", "h1", "h2", *args)
    assert r.returncode == 2
    assert r.stderr.startswith("labctl: ") and words in r.stderr


def test_down_of_a_missing_file_says_so():
    r = run_labctl("down", "nosuch.json")
    assert r.returncode == 2
    assert r.stderr.startswith("labctl: nosuch.json: cannot read: No such file or directory (ENOENT)")


def test_every_error_message_starts_with_labctl(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    for args in (["validate", bad], ["up", bad], ["graph", bad], ["status", "nosuchlab"],
                 ["exec", "nosuchlab", "h1", "--", "true"], ["down"], ["verify"]):
        r = run_labctl(*args)
        assert r.returncode == 2, args
        assert r.stderr.startswith("labctl: "), (args, r.stderr)


# --- 10: exit codes ------------------------------------------------------------------------

def test_unknown_lab_or_node_exits_2_everywhere(lab):
    _, name = lab
    for args in (["status", "nosuchlab"], ["verify", "nosuchlab"], ["ping", "nosuchlab", "h1", "h2"],
                 ["exec", "nosuchlab", "h1", "--", "true"], ["graph", "nosuchlab"],
                 ["ping", name, "h9", "h2"], ["ping", name, "h1", "h9"], ["ping", name, "h1:eth9", "h2"],
                 ["exec", name, "h9", "--", "true"]):
        r = run_labctl(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("labctl: "), args


def test_exec_of_a_missing_or_unexecutable_program_exits_like_a_shell(lab, tmp_path):
    _, name = lab
    r = run_labctl("exec", name, "h1", "--", "no-such-program-here")
    assert r.returncode == 127
    assert r.stderr.startswith("labctl: h1: running \"no-such-program-here\": No such file")
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    r = run_labctl("exec", name, "h1", "--", str(script))
    assert r.returncode == 126
    assert "Permission denied" in r.stderr


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot")
def test_graph_formats_and_unwritable_output(tmp_path):
    topo = ROOT / "labs" / "quickstart" / "topology.json"
    codes = set()
    for ext in ("dot", "svg", "png"):
        r = run_labctl("graph", topo, "-o", tmp_path / "no" / "such" / f"dir.{ext}")
        codes.add(r.returncode)
        assert "No such file or directory" in r.stderr
    assert codes == {3}
    out = tmp_path / "Q.SVG"
    assert run_labctl("graph", topo, "-o", out).returncode == 0
    assert out.read_text().lstrip().startswith("<?xml")
    r = run_labctl("graph", topo, "-o", tmp_path / "q.gif")
    assert r.returncode == 2 and "unknown picture format" in r.stderr


# --- 11: status ----------------------------------------------------------------------------

def test_status_shows_description_links_daemons_and_logs(lab):
    path, name = lab
    s = json_out(run_labctl("status", name, "--json"))
    assert s["description"] == "polish lab" and s["state"] == "up"
    assert [n["state"] for n in s["nodes"]] == ["up", "up", "up"]
    link = s["links"][0]
    assert link == {"endpoints": ["h1:eth0", "r1:eth1"], "mtu": 1400, "impair": {}}
    assert s["links"][1]["mtu"] == 1500 and s["links"][1]["impair"] == {}
    lo = next(i for i in s["nodes"][0]["interfaces"] if i["name"] == "lo")
    assert lo["mac"] is None
    eth0 = next(i for i in s["nodes"][0]["interfaces"] if i["name"] == "eth0")
    assert eth0["mac"] == ip_json(f"{name}-h1", "link", "show", "eth0")[0]["address"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the second daemon exits half a second after it starts
        daemons = json_out(run_labctl("status", name, "--json"))["nodes"][2]["daemons"]
        if daemons[1]["state"] == "exited" and daemons[1].get("exit_status") is not None:
            break
    assert [d["state"] for d in daemons] == ["running", "exited"]
    assert all(os.path.exists(d["log"]) for d in daemons)
    text = run_labctl("status", name).stdout
    assert f"lab {name}: up (polish lab)" in text
    assert "state and logs in" in text
    assert "exited with status 3: sh -c sleep 0.5; exit 3" in text and "log " + daemons[0]["log"] in text
    assert "link h1:eth0 <-> r1:eth1  mtu 1400\n" in text
    listing = run_labctl("status").stdout.splitlines()
    assert listing[0].split() == ["LAB", "STATE", "NODES", "DAEMONS", "SOURCE"]
    row = next(line for line in listing if line.startswith(name + " "))
    assert row.split()[1:4] == ["up", "3", "2"]


@pytest.mark.kernel("tun")
def test_status_tells_tap_from_tun_and_gives_tun_no_mac(tmp_path):
    labs = Labs(tmp_path)
    try:
        path, name = labs.write({"nodes": {
            "h1": {"interfaces": {"tap0": {"type": "tap"}, "tun0": {"type": "tun"}}}}})
        assert run_labctl("up", path).returncode == 0
        ifaces = {i["name"]: i for i in json_out(run_labctl("status", name, "--json"))["nodes"][0]["interfaces"]}
        assert ifaces["tap0"]["kind"] == "tap" and ifaces["tap0"]["mac"]
        assert ifaces["tun0"]["kind"] == "tun" and ifaces["tun0"]["mac"] is None
    finally:
        labs.cleanup()


@pytest.mark.kernel("netem")
def test_status_shows_a_links_impairment(tmp_path):
    labs = Labs(tmp_path)
    try:
        path, name = labs.write({"nodes": {"a": {}, "b": {}},
                                 "links": [{"endpoints": ["a:eth0", "b:eth0"],
                                            "impair": {"delay_ms": 5, "loss_pct": 1.5}}]})
        assert run_labctl("up", path).returncode == 0
        link = json_out(run_labctl("status", name, "--json"))["links"][0]
        assert link["impair"] == {"delay_ms": 5, "loss_pct": 1.5}
        assert "link a:eth0 <-> b:eth0  mtu 1500  delay_ms 5.0  loss_pct 1.5" in run_labctl("status", name).stdout
    finally:
        labs.cleanup()


def test_status_without_privileges_says_so():
    # Root without the capabilities is told what it lacks.
    r = subprocess.run(["capsh", "--drop=cap_net_admin,cap_sys_admin", "--", "-c", f"exec {LABCTL} status"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 3
    assert r.stderr.startswith("labctl: labctl needs CAP_NET_ADMIN and CAP_SYS_ADMIN"), r.stderr
    # Another uid runs rootless (docs/rootless.md), in a state directory of its own: root's
    # is refused, naming it.
    state = os.environ.get("LABCTL_STATE_DIR") or "/run/labctl"
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", LABCTL, "status"],
                       capture_output=True, text=True, timeout=30, env={**os.environ, "LABCTL_STATE_DIR": state})
    assert r.returncode == 3
    assert r.stderr.startswith(f"labctl: state directory {state} ") and "refusing" in r.stderr, r.stderr


# --- 5: a missing namespace -----------------------------------------------------------------

def test_a_missing_namespace_fails_its_checks_and_the_rest_run(tmp_path):
    labs = Labs(tmp_path)
    try:
        doc = dual(unique_name("pm"))
        del doc["nodes"]["h2"]["daemons"]
        doc["nodes"]["r1"]["interfaces"]["eth3"] = {"addresses": ["10.0.3.1/24"]}
        doc["nodes"]["h3"] = {"interfaces": {"eth0": {"addresses": ["10.0.3.10/24"]}},
                              "routes": [{"to": "default", "via": "10.0.3.1"}]}
        doc["links"].append({"endpoints": ["r1:eth3", "h3:eth0"]})
        doc["checks"] = [{"from": "h1", "to": "h2"}, {"from": "h1", "to": "h3"},
                         {"from": "h3", "to": "10.0.2.10"}]
        path, name = labs.write(doc)
        assert run_labctl("up", path).returncode == 0
        subprocess.run(["ip", "netns", "del", f"{name}-h2"], check=True)
        s = json_out(run_labctl("status", name, "--json"))
        assert s["state"] == "degraded"
        assert {n["name"]: n["state"] for n in s["nodes"]} == {"h1": "up", "r1": "up", "h2": "missing", "h3": "up"}
        assert f"h2 (host, namespace {name}-h2) missing" in run_labctl("status", name).stdout
        listed = [lab for lab in json_out(run_labctl("status", "--json")) if lab["name"] == name]
        assert [lab["state"] for lab in listed] == ["degraded"]
        r = run_labctl("verify", name, "--json")
        assert r.returncode == 1, r.stderr
        got = {(c["src"], c["dst"]): (c["ok"], c["reason"]) for c in json_out(r)["checks"]}
        assert got[("h1", "h3")] == (True, "")
        gone = f"node h2 is missing (namespace {name}-h2 is gone)"
        assert got[("h1", "h2")] == (False, gone)
        assert got[("h3", "10.0.2.10")] == (False, gone)  # a literal address of the missing node
        assert run_labctl("down", name).returncode == 0
        assert not [ns for ns in netns_list() if ns.startswith(name + "-")]
    finally:
        labs.cleanup()


# --- 12: graph of a running lab --------------------------------------------------------------

def test_graph_of_a_running_lab(lab):
    path, name = lab
    r = run_labctl("graph", name)
    assert r.returncode == 0
    assert r.stdout == run_labctl("graph", path).stdout


# --- 13: ping -i, -4/-6, Ctrl-C ------------------------------------------------------------

def test_ping_family_and_interval(lab):
    _, name = lab
    r = run_labctl("ping", name, "h1", "r1", "-6", "-c", "1")
    assert r.returncode == 0 and "(fd00:1::1)" in r.stdout
    r = run_labctl("ping", name, "h1", "r1", "-4", "-c", "1")
    assert r.returncode == 0 and "(10.0.1.1)" in r.stdout
    r = run_labctl("ping", name, "h1", "h2", "-6", "-c", "1")
    assert r.returncode == 2 and "h2 has no IPv6 address to ping" in r.stderr
    r = run_labctl("ping", name, "h1", "h2", "-4", "-6")
    assert r.returncode == 2
    started = time.monotonic()
    r = run_labctl("ping", name, "h1", "h2", "-c", "3", "-i", "0.5")
    assert r.returncode == 0
    assert time.monotonic() - started >= 1.0  # two gaps of 0.5 s between three requests


def test_ping_ctrl_c_prints_the_summary(lab):
    _, name = lab
    p = subprocess.Popen([LABCTL, "ping", name, "h1", "h2", "-c", "1000", "-i", "0.2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline()
        assert first.startswith("reply from h2: icmp_seq=1"), first
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert "--- h2 (10.0.2.10) from h1 ---" in out
    assert " packets transmitted, " in out and "rtt min/avg/max" in out
    sent = int(out.split("--- h2")[1].split("\n")[1].split()[0])
    assert 1 <= sent < 1000


# --- 14: all pairs in every family ---------------------------------------------------------

def test_all_pairs_pings_every_family_both_ends_have(lab):
    _, name = lab
    r = run_labctl("verify", name, "--all-pairs", "--json")
    assert r.returncode == 0, r.stdout
    pairs = {(c["src"], c["dst"], c["address"]) for c in json_out(r)["checks"]}
    assert ("h1", "r1", "10.0.1.1") in pairs and ("h1", "r1", "fd00:1::1") in pairs
    assert ("r1", "h1", "fd00:1::10") in pairs
    assert not any(src == "h2" and ":" in addr for src, _, addr in pairs)  # h2 has no IPv6
    assert not any(dst == "h2" and ":" in addr for _, dst, addr in pairs)
    assert len(pairs) == 8  # 6 ordered pairs in IPv4, h1<->r1 in IPv6 too
