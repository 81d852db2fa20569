"""tests/vm/kernel-tests (make vm-test): a test VM that cannot be prepared fails the run;
only LABCTL_VM=skip skips it, and says so. (The VM runs themselves are make vm-test's.)"""
import os
import subprocess

from conftest import KERNEL_FEATURES, ROOT, missing_kernel_features

SCRIPT = ROOT / "tests" / "vm" / "kernel-tests"


def kernel_tests(**env):
    e = dict(os.environ, **env)
    # A cache path prepare refuses at once: the VM "cannot be prepared", nothing installed.
    e["LABCTL_VM_CACHE"] = "not/absolute"
    return subprocess.run([str(SCRIPT)], capture_output=True, text=True, env=e, timeout=120)


def test_a_vm_that_cannot_be_prepared_fails_unless_skipped_by_request():
    r = kernel_tests(LABCTL_VM="")
    if not missing_kernel_features(KERNEL_FEATURES):
        # Nothing needs the VM on this kernel: the tests ran on the host.
        assert r.returncode == 0 and "has every feature" in r.stdout, r.stdout + r.stderr
        return
    assert r.returncode == 1, r.stdout + r.stderr
    assert "vm-test: FAILED: the test VM cannot run" in r.stderr, r.stderr
    assert "LABCTL_VM=skip" in r.stderr, r.stderr
    r = kernel_tests(LABCTL_VM="skip")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "vm-test: SKIPPED (LABCTL_VM=skip)" in r.stdout and "did not run" in r.stdout, r.stdout
