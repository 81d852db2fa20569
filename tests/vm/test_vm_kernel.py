"""The test VM boots Debian's stock kernel and has what this machine's kernel lacks.

Run from the host, as root:  /usr/bin/python3 -m pytest -p no:cacheprovider tests/vm
(`make test` runs them through tests/vm/kernel-tests whenever it uses the VM.)
One VM boot for the whole module (session fixture); each test reads its check's line.
"""

import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vmrun  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def guest_checks():
    # These tests are the VM's proofs: a VM that cannot run fails them (make test runs
    # them only when the VM is needed and not skipped with LABCTL_VM=skip).
    try:
        vmrun.prepare()
    except vmrun.VmUnavailable as e:
        pytest.fail(f"no test VM here: {e}", pytrace=False)
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("no test VM here: qemu-system-x86_64 is not installed", pytrace=False)
    rc, output = vmrun.run_in_vm(["bash", "tests/vm/guest_checks.sh"], cwd=REPO, timeout=300)
    assert rc == 0, f"the VM run failed with {rc}:\n{output}"
    checks = {}
    for line in output.splitlines():
        m = re.match(r"CHECK (\S+) (\d+) ?(.*)$", line)
        if m:
            checks[m[1]] = (int(m[2]), m[3])
    assert checks, f"no CHECK lines in the VM's output:\n{output}"
    return checks


def passed(checks, name):
    assert name in checks, f"check {name} did not run"
    rc, out = checks[name]
    assert rc == 0, f"{name} failed ({rc}): {out}"
    return out


def test_runs_the_stock_kernel(guest_checks):
    assert passed(guest_checks, "kernel").strip().endswith("-amd64")


@pytest.mark.parametrize("name", ["dummy", "vlan", "bridge_vlan_filtering", "tun", "tbf", "netem", "netem_peer"])
def test_stock_kernel_has(guest_checks, name):
    passed(guest_checks, name)


def test_pytest_runs_inside(guest_checks):
    assert "7 passed" in passed(guest_checks, "pytest_inside")


def test_vlan_device_is_802_1q_id_10(guest_checks):
    assert "vlan protocol 802.1Q id 10" in passed(guest_checks, "vlan")


def test_bridge_filters_vlans(guest_checks):
    assert "vlan_filtering 1" in passed(guest_checks, "bridge_vlan_filtering")


def rtt_ms(ping_output):
    """(min, avg) round trip in ms from ping's summary line."""
    m = re.search(r"rtt min/avg/max/mdev = ([\d.]+)/([\d.]+)/", ping_output)
    assert m, f"no rtt summary in: {ping_output}"
    return float(m[1]), float(m[2])


def test_netem_delays_both_ends(guest_checks):
    assert "netem" in passed(guest_checks, "netem_show")
    plain_min, _ = rtt_ms(passed(guest_checks, "ping_plain"))
    delayed_min, delayed_avg = rtt_ms(passed(guest_checks, "ping_netem"))
    # 40 ms of netem delay on each end of the veth pair: at least 80 ms round trip;
    # the emulated CPU adds a few ms (more on a busy host), never takes any away.
    assert delayed_min >= 80, f"rtt min {delayed_min} ms with 2 x 40 ms netem delay"
    assert delayed_avg <= 200, f"rtt avg {delayed_avg} ms with 2 x 40 ms netem delay"
    assert plain_min < 40, f"rtt min {plain_min} ms without netem"


def test_kernel_has_sees_this_kernel():
    # Whatever this kernel has, the answers are booleans; unknown names are errors.
    for feature in ("netem", "tbf", "vlan", "bridge_vlan_filtering", "dummy", "tun"):
        assert isinstance(vmrun.kernel_has(feature), bool)
    with pytest.raises(ValueError):
        vmrun.kernel_has("nonsense")
