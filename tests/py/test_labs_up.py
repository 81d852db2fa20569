"""Every lab in labs/ comes up with its checks passing, does what its README teaches,
and goes down leaving no namespace behind. Root only; a lab whose kernel feature this
machine lacks (labctl exits 3 naming the CONFIG_ option) is skipped, not failed."""
import json
import os
import re
import subprocess

import pytest

from conftest import LABCTL, ROOT
from labfix import lab_namespaces

LABS = sorted(p.parent.name for p in (ROOT / "labs").glob("*/topology.json"))
# Labs that use features some kernels lack: they run in the test VM on such kernels.
KERNEL_NEEDS = {"vlans": ("bridge_vlan_filtering", "vlan"), "impairments": ("netem", "tbf")}


def lab_param(name):
    marks = [pytest.mark.kernel(*KERNEL_NEEDS[name])] if name in KERNEL_NEEDS else []
    return pytest.param(name, marks=marks, id=name)


pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bringing labs up needs root")


@pytest.fixture
def lab(request, tmp_path):
    """Brings labs/<name> up (from the repository root: daemons name repo paths),
    yields a helper, and always brings it down again."""
    name = request.param
    env = dict(os.environ, LABCTL_STATE_DIR=str(tmp_path / "state"))
    if lab_namespaces(name):
        pytest.skip(f"namespaces of a lab named {name} already exist on this machine")

    def labctl(*args, timeout=120):
        return subprocess.run([LABCTL, *map(str, args)],
                              capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)

    r = labctl("up", f"labs/{name}/topology.json")
    try:
        assert r.returncode == 0, f"up failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        yield labctl
    finally:
        d = labctl("down", name)
        assert d.returncode == 0, d.stderr
        assert not lab_namespaces(name), "down left namespaces behind"


def sh_in(labctl, lab, node, *argv):
    return labctl("exec", lab, node, "--", *argv)


@pytest.mark.parametrize("lab", [lab_param(n) for n in LABS], indirect=True)
def test_lab_comes_up_verified_and_goes_down(lab):
    pass  # the fixture asserts up (with its checks) and down


@pytest.mark.parametrize("lab", ["veth-patch-cable"], indirect=True)
def test_plugging_the_cable_in(lab):
    r = lab("ping", "veth-patch-cable", "h1:eth1", "h2:eth1", "-c", "2")
    assert r.returncode != 0
    assert sh_in(lab, "veth-patch-cable", "h2", "ip", "link", "set", "eth1", "up").returncode == 0
    r = lab("ping", "veth-patch-cable", "h1:eth1", "h2:eth1", "-c", "10")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("lab", ["tun-vs-tap"], indirect=True)
def test_peers_answer_behind_tap_and_tun(lab):
    for target in ("10.0.2.2", "10.0.3.2"):
        r = lab("ping", "tun-vs-tap", "h1", target, "-c", "5")
        assert r.returncode == 0, r.stdout + r.stderr
    # Behind the TAP there is an Ethernet neighbour with the peer's MAC...
    r = sh_in(lab, "tun-vs-tap", "h1", "ip", "neigh", "show", "10.0.2.2")
    assert "02:00:0a:00:02:02" in r.stdout
    # ...which the switch learned on its TAP port.
    r = sh_in(lab, "tun-vs-tap", "sw", "bridge", "fdb", "show", "br", "br0")
    assert re.search(r"02:00:0a:00:02:02 dev tap0", r.stdout), r.stdout
    # A TUN has no link-layer address at all.
    r = sh_in(lab, "tun-vs-tap", "r1", "ip", "-j", "link", "show", "tun0")
    assert json.loads(r.stdout)[0]["link_type"] == "none"


@pytest.mark.parametrize("lab", ["bridge-lan"], indirect=True)
def test_switch_learned_every_host(lab):
    r = sh_in(lab, "bridge-lan", "sw", "bridge", "fdb", "show", "br", "br0")
    for i in range(1, 5):
        assert re.search(rf"02:00:00:00:00:0{i} dev p{i}", r.stdout), r.stdout


@pytest.mark.parametrize("lab", ["static-routing"], indirect=True)
def test_ttl_walks_the_path(lab):
    hops = []
    for ttl in (1, 2):
        r = sh_in(lab, "static-routing", "h1", "ping", "-n", "-c", "1", "-W", "1", "-t", str(ttl), "10.0.3.10")
        m = re.search(r"From (\S+) icmp_seq=\d+ Time to live exceeded", r.stdout)
        assert m, r.stdout
        hops.append(m.group(1))
    assert hops == ["10.0.1.1", "10.0.13.2"]


@pytest.mark.parametrize("lab", [lab_param("vlans")], indirect=True)
def test_moving_h4_to_vlan_10(lab):
    for cmd in (["bridge", "vlan", "del", "dev", "p4", "vid", "20"],
                ["bridge", "vlan", "add", "dev", "p4", "vid", "10", "pvid", "untagged"]):
        r = sh_in(lab, "vlans", "sw", *cmd)
        assert r.returncode == 0, r.stderr
    r = lab("ping", "vlans", "h1", "h4", "-c", "5")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("lab", ["mtu"], indirect=True)
def test_what_breaks_and_what_still_works(lab):
    def ping(node, *args):
        return sh_in(lab, "mtu", node, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", *args)
    assert ping("h1", "-s", "8000", "-M", "do", "10.0.1.1").returncode == 0   # jumbo link
    assert ping("h1", "-s", "8000", "-M", "do", "10.0.2.10").returncode != 0  # DF, 1500 ahead
    assert ping("h1", "-s", "8000", "-M", "dont", "10.0.2.10").returncode == 0  # fragmented
    assert ping("h3", "-s", "2000", "10.0.3.1").returncode != 0  # mismatch: silently dropped
    assert ping("h3", "-s", "1400", "10.0.3.1").returncode == 0  # small still fits
    assert ping("h1", "-s", "2000", "-M", "dont", "10.0.3.10").returncode != 0  # reply lost


@pytest.mark.parametrize("lab", [lab_param("impairments")], indirect=True)
def test_delay_is_measurable(lab):
    r = sh_in(lab, "impairments", "r1", "ping", "-n", "-c", "5", "-i", "0.2", "10.0.1.10")
    assert r.returncode == 0, r.stdout
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", r.stdout)
    assert m and 25 <= float(m.group(2)) <= 100, r.stdout


@pytest.mark.parametrize("lab", ["services"], indirect=True)
def test_client_fetches_the_page(lab):
    code = ("import urllib.request, time\n"
            "for i in range(50):\n"
            "    try:\n"
            "        r = urllib.request.urlopen('http://10.0.5.10:8080/', timeout=2); break\n"
            "    except OSError: time.sleep(0.1)\n"
            "print(r.status); print(r.read().decode())")
    r = sh_in(lab, "services", "client", "python3", "-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("200") and "Hello from the web node" in r.stdout
