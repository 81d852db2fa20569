"""The courseware in labs/: every lab validates, has its README and picture, and the
committed picture is exactly what `labctl graph` draws today."""
import json
import re

import pytest

from conftest import ROOT, run_labctl

LABS_DIR = ROOT / "labs"
LABS = sorted(p.parent for p in LABS_DIR.glob("*/topology.json"))
TEACHING_ORDER = ["quickstart", "veth-patch-cable", "tun-vs-tap", "bridge-lan", "static-routing",
                  "vlans", "ipv6", "mtu", "impairments", "services", "link-failure"]


def ids(p):
    return p.name


def test_the_course_has_its_labs():
    names = {p.name for p in LABS}
    assert set(TEACHING_ORDER) <= names
    # Every folder under labs/ is a lab.
    assert {p.name for p in LABS_DIR.iterdir() if p.is_dir()} == names


@pytest.mark.parametrize("lab", LABS, ids=ids)
def test_lab_validates(lab):
    r = run_labctl("validate", lab / "topology.json")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


@pytest.mark.parametrize("lab", LABS, ids=ids)
def test_lab_name_is_its_folder(lab):
    doc = json.loads((lab / "topology.json").read_text())
    assert doc["name"] == lab.name
    assert re.fullmatch(r"[a-z][a-z0-9-]{0,15}", doc["name"])


@pytest.mark.parametrize("lab", LABS, ids=ids)
def test_lab_has_readme_and_picture(lab):
    readme = lab / "README.md"
    assert readme.is_file()
    text = readme.read_text()
    assert "![topology](topology.svg)" in text
    assert f"labctl up labs/{lab.name}/topology.json" in text
    assert "labctl down" in text
    assert (lab / "topology.svg").is_file()


@pytest.mark.parametrize("lab", LABS, ids=ids)
def test_committed_picture_is_what_graph_draws(lab, tmp_path):
    out = tmp_path / "topology.svg"
    r = run_labctl("graph", lab / "topology.json", "-o", out)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == (lab / "topology.svg").read_bytes(), (
        f"labs/{lab.name}/topology.svg is stale; regenerate it with "
        f"labctl graph labs/{lab.name}/topology.json -o labs/{lab.name}/topology.svg")


@pytest.mark.parametrize("lab", LABS, ids=ids)
def test_lab_addresses_are_lab_addresses(lab):
    """Inside labs: 10.0.0.0/8 and fd00::/8; documentation ranges only as unreachable targets."""
    import ipaddress
    doc = json.loads((lab / "topology.json").read_text())
    inside = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]
    unreachable = inside + [ipaddress.ip_network(n) for n in
                            ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
    for node in doc["nodes"].values():
        for iface in node.get("interfaces", {}).values():
            for a in iface.get("addresses", []):
                net = ipaddress.ip_interface(a).network
                assert any(net.subnet_of(n) for n in inside if n.version == net.version), a
    for c in doc.get("checks", []):
        try:
            addr = ipaddress.ip_address(c["to"])
        except ValueError:
            continue
        allowed = unreachable if c.get("expect") == "unreachable" else inside
        assert any(addr in n for n in allowed), c


def test_index_lists_every_lab_in_teaching_order():
    text = (LABS_DIR / "README.md").read_text()
    positions = [text.find(f"({name}/)") for name in TEACHING_ORDER]
    assert all(p >= 0 for p in positions), dict(zip(TEACHING_ORDER, positions))
    assert positions == sorted(positions)
    for lab in LABS:
        assert f"({lab.name}/)" in text, lab.name


def test_tun_vs_tap_daemons_name_the_shipped_peer():
    doc = json.loads((LABS_DIR / "tun-vs-tap" / "topology.json").read_text())
    daemons = [d for n in doc["nodes"].values() for d in n.get("daemons", [])]
    assert daemons
    for d in daemons:
        argv = d["run"] if isinstance(d, dict) else d
        # Daemons run in the topology file's folder: the path is relative to it.
        assert (LABS_DIR / "tun-vs-tap" / argv[1]).is_file(), d


@pytest.mark.parametrize("lab", LABS, ids=ids)
def test_readme_commands_name_this_lab_and_its_nodes(lab):
    """`labctl exec|ping LAB NODE`, `ip netns exec LAB-NODE` and `ip -n LAB-NODE` in a
    README name this lab and nodes it has (the scratch namespace of tun-vs-tap aside)."""
    nodes = set(json.loads((lab / "topology.json").read_text())["nodes"])
    text = (lab / "README.md").read_text()
    for m in re.finditer(r"labctl (exec|ping|status|verify|down) ([a-z][a-z0-9-]*)(?: (\S+))?", text):
        verb, name, node = m.groups()
        assert name == lab.name, m.group(0)
        if verb in ("exec", "ping"):
            assert node.startswith("$") or node.split(":")[0] in nodes, m.group(0)
    for m in re.finditer(r"ip (?:netns exec|-n) (\S+)", text):
        ns = m.group(1)
        if ns == "scratch":
            continue
        assert ns.startswith(lab.name + "-") and ns[len(lab.name) + 1:] in nodes, m.group(0)
