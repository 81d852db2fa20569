"""Run by pytest INSIDE the test VM (guest_checks.sh names it; its name keeps the
host's pytest from collecting it): pytest works there, from the repository (writes stay in the guest),
and vmrun.kernel_has sees every feature of the stock kernel."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vmrun  # noqa: E402


@pytest.mark.parametrize("feature", ["netem", "tbf", "vlan", "bridge_vlan_filtering", "dummy", "tun"])
def test_stock_kernel_has(feature):
    assert vmrun.kernel_has(feature)


def test_runs_in_the_vm_with_a_writable_tmp(tmp_path):
    assert os.uname().nodename == "labctl-vm"
    (tmp_path / "x").write_text("ok")
    assert (tmp_path / "x").read_text() == "ok"
