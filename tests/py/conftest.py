"""Shared fixtures: where the labctl binary and the repository are; `labs` and `names`, which
remove every lab a test made. The helpers they use are in labfix.py."""
import os
import pathlib
import subprocess
import sys as _sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LABCTL = os.environ.get("LABCTL", str(ROOT / "build" / "labctl"))
ROOTLESS_IN_CHROOT = "the suite runs in a chroot, where the kernel gives no process a user namespace"
ROOTLESS_REFUSED = ("unprivileged user namespaces are refused here (unshare --user as uid 65534 failed: "
                    "a host setting, a container's seccomp profile, or a chroot)")


def chrooted():
    """Whether this process's root is not init's (a chroot such as fresh-debian.sh's)."""
    try:
        here, init = os.stat("/"), os.stat("/proc/1/root/")
    except OSError:
        return False
    return (here.st_dev, here.st_ino) != (init.st_dev, init.st_ino)


# Where labctl keeps its state in these runs (LABCTL_STATE_DIR, as labctl reads it).
STATE_ROOT = os.environ.get("LABCTL_STATE_DIR") or "/run/labctl"


def run_labctl(*args, input=None, timeout=120, env=None):
    """Runs the CLI; returns the CompletedProcess (text mode)."""
    return subprocess.run([LABCTL, *map(str, args)], capture_output=True, text=True,
                          input=input, timeout=timeout, env=env)


@pytest.fixture
def labctl():
    return run_labctl


@pytest.fixture
def labs(tmp_path):
    """A labfix.Labs: writes topology files; every lab written is downed (and its namespaces
    removed) after the test, whatever happened."""
    import labfix  # here: labfix imports run_labctl from this module

    made = labfix.Labs(tmp_path)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def names():
    """new(tag) hands out unique lab names; after the test every such lab is downed through the
    Python API, and none may have left a namespace."""
    import labctl as api  # the Python package (PYTHONPATH=build/python)
    import labfix

    made = []

    def new(tag="l"):
        made.append(labfix.unique_name(tag))
        return made[-1]

    yield new
    for name in made:
        api.down(name)
        assert not labfix.lab_namespaces(name), f"namespaces of {name} left behind"


@pytest.fixture
def importable_labctl(monkeypatch):
    """An inner pytest (pytester) runs elsewhere: give it the labctl this session imported."""
    import labctl as api

    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(api.__file__)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([package_dir, os.environ.get("PYTHONPATH", "")]))


@pytest.fixture
def plugin_names():
    """new(tag) hands out lab names of at most 7 letters (the pytest plugin names fixture labs
    "<first 7 letters>-<unique>"); after the test every lab so named, or so prefixed, is downed."""
    import secrets

    import labctl as api

    made = []

    def new(tag="p"):
        made.append(f"{tag}{secrets.token_hex(3)}"[:7])
        return made[-1]

    yield new
    for name in made:
        for lab in api.status():
            if lab["name"] == name or lab["name"].startswith(name + "-"):
                api.down(lab["name"])


# ---- kernel features -----------------------------------------------------------------
# Tests marked @pytest.mark.kernel("netem", ...) need features some kernels lack (this
# project's CI kernel among them). On such a kernel they are deselected here and
# `make test` runs them inside a VM with Debian's stock kernel (tests/vm), where
# LABCTL_KERNEL_ONLY=1 selects exactly them.
_sys.path.insert(0, str(ROOT / "tests" / "vm"))
import vmrun as _vmrun  # noqa: E402 (after the sys.path entry it needs)

KERNEL_FEATURES = _vmrun.KERNEL_FEATURES  # one list, next to how each is detected


def pytest_configure(config):
    config.addinivalue_line("markers", "kernel(*features): needs these kernel features "
                            f"({', '.join(KERNEL_FEATURES)}); run in the test VM when missing")


def missing_kernel_features(features):
    return [f for f in features if not _vmrun.kernel_has(f)]


def pytest_collection_modifyitems(config, items):
    kernel_only = os.environ.get("LABCTL_KERNEL_ONLY") == "1"
    keep, gone, cache = [], [], {}
    for item in items:
        marker = item.get_closest_marker("kernel")
        if kernel_only:
            (keep if marker else gone).append(item)
            continue
        if marker is None:
            keep.append(item)
            continue
        missing = [f for f in marker.args if not cache.setdefault(f, _vmrun.kernel_has(f))]
        (gone if missing else keep).append(item)
    if gone:
        config.hook.pytest_deselected(items=gone)
        items[:] = keep
        if not kernel_only:
            config._labctl_in_vm = len(gone)


def pytest_terminal_summary(terminalreporter, config):
    n = getattr(config, "_labctl_in_vm", 0)
    if n:
        terminalreporter.write_line(
            f"{n} tests need kernel features this kernel lacks; `make test` runs them in the "
            "test VM (make vm-test)")
    if _unexpected_skips:
        verdict = ("FAILED: in CI every test must run" if in_ci()
                   else "(in CI, with CI=true, these fail the run)")
        terminalreporter.write_line(
            f"{len(_unexpected_skips)} tests skipped that are not on conftest.ALLOWED_SKIPS {verdict}:",
            red=True, bold=True)
        for nodeid, reason in _unexpected_skips:
            terminalreporter.write_line(f"  SKIPPED {nodeid}: {reason}", red=True)


# ---- skips ---------------------------------------------------------------------------
# A skipped test proved nothing. In CI (CI set, as CI services and fresh-debian.sh set
# it) a skip fails the run unless it is on this list: (test file::test name, reason),
# each a skip that is the right answer on some machine `make test` supports.
ALLOWED_SKIPS = {
    # The refusal test needs a kernel WITHOUT netem; on a stock kernel nothing to refuse.
    ("test_kernel_features.py::test_missing_feature_is_refused_before_anything_is_touched",
     "this kernel has netem"),
    # Rootless labs need an unprivileged user namespace, which Linux never gives a process
    # whose root is a chroot (CLONE_NEWUSER: EPERM): `make test` inside fresh-debian.sh's
    # chroot. Only when the suite runs chrooted AND the kernel refuses (test_rootless.py).
    ("test_rootless.py::*", ROOTLESS_IN_CHROOT),
    # The same on a host that disables them (a sysctl, AppArmor, a container's seccomp
    # profile): labctl then refuses, naming the setting (tested with a stand-in /proc).
    ("test_rootless.py::*", ROOTLESS_REFUSED),
}
_unexpected_skips = []  # (nodeid, reason) of this session


def in_ci():
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _skip_reason(report):
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def unexpected_skip(nodeid, reason):
    """True unless (file::test, reason) is on ALLOWED_SKIPS (parameters ignored)."""
    # Parameters first: they may hold a '/' ("[kernel/unprivileged_userns_clone-0]").
    test = nodeid.split("[", 1)[0].rsplit("/", 1)[-1]
    return (test, reason) not in ALLOWED_SKIPS and (test.split("::")[0] + "::*", reason) not in ALLOWED_SKIPS


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if unexpected_skip(report.nodeid, reason):
            _unexpected_skips.append((report.nodeid, reason))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    if _unexpected_skips and in_ci() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
