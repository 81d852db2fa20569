"""pytest plugin: topologies as fixtures.

Load it with ``-p labctl.pytest_plugin`` or ``pytest_plugins = ["labctl.pytest_plugin"]``.

    @pytest.mark.lab("labs/triangle.json")     # relative to the test file's folder
    def test_routes(lab):                      # up and verified before, down after
        assert lab.ping("h1", "h3").ok

    def test_custom(lab_factory):              # labs from dicts or files, all removed after
        a = lab_factory({"name": "t1", "nodes": {...}, "links": [...]})

Sharing one lab across a module: ``scope="module"`` in the marker, usually on the module::

    pytestmark = pytest.mark.lab("labs/triangle.json", scope="module")

Every test of the module then gets the same lab, brought up (and verified) for the first
test that asks for ``lab`` and removed after the module's last test.

Labs are removed when a test passes, fails or errors, and when the run is interrupted
(Ctrl-C). With ``--labctl-keep`` a failed test's lab stays up and its name is printed at
the end of the run (remove it with ``labctl down NAME``).
"""
from __future__ import annotations

import itertools
import os
import pathlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from .errors import CheckFailed, Error
from .lab import Lab, Topology

__all__ = ["lab", "lab_factory"]

_MARKER_HELP = ("lab(topology, scope='function', verify=True): the topology (a path relative to "
                "the test file's folder, or a dict) the `lab` fixture brings up; scope='module' "
                "shares one lab across the module's tests")

_SCOPES = ("function", "module", "session")


_instances = itertools.count(1)


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _new_lab(topology: Topology) -> Lab:
    """The topology as a lab of its own name: `<first 7 letters of the file's name>-<pid><n>`,
    so the same file used by several tests, runs or pytest-xdist workers (each its own
    process) never gives two labs one name."""
    name = Lab(topology).name
    return Lab(topology, name=f"{name[:7].rstrip('-')}-{_base36(os.getpid())}{_base36(next(_instances))}"[:16])


class _Registry:
    """Labs the plugin has up, those kept for inspection, and the last-resort cleanup."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.live: Dict[int, Lab] = {}
        self.kept: List[Tuple[str, str]] = []  # (lab name, who failed)

    def started(self, lab: Lab) -> None:
        self.live[id(lab)] = lab

    def finish(self, lab: Lab, failed_test: Optional[str]) -> None:
        """Removes the lab, or keeps it when asked to and a test using it failed."""
        if self.keep and failed_test and lab._owned and lab.is_up:
            self.kept.append((lab.name, failed_test))
            self.live.pop(id(lab), None)
            return
        try:
            if lab._owned:
                lab.down()
        finally:
            self.live.pop(id(lab), None)

    def remove_all(self) -> List[str]:
        """Downs every lab still up (a run cut short); their names."""
        removed = []
        for lab in list(self.live.values()):
            try:
                if lab._owned and lab.down():
                    removed.append(lab.name)
            except Error:
                pass
        self.live.clear()
        return removed


_REGISTRY = pytest.StashKey[_Registry]()
_FAILED = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("labctl")
    group.addoption("--labctl-keep", action="store_true", default=False,
                    help="keep the lab of a failed test up for inspection; its name is printed "
                         "at the end of the run (remove it with `labctl down NAME`)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)
    config.stash[_REGISTRY] = _Registry(bool(config.getoption("labctl_keep", False)))


def pytest_unconfigure(config: pytest.Config) -> None:
    # Fixtures are torn down even on Ctrl-C; this catches what a second Ctrl-C during a
    # teardown left behind.
    registry = config.stash.get(_REGISTRY, None)
    if registry is not None:
        registry.remove_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        item.stash[_FAILED] = item.nodeid


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    registry = config.stash.get(_REGISTRY, None)
    if registry is None or not registry.kept:
        return
    terminalreporter.write_sep("-", "labctl: labs kept up for inspection (--labctl-keep)")
    for name, test in registry.kept:
        terminalreporter.write_line(f"labctl: kept lab {name} up (failed: {test}); "
                                    f"remove it with `labctl down {name}`")


def _resolve(topology: Topology, test_path: pathlib.Path) -> Topology:
    """A relative path names a file next to the test file."""
    if isinstance(topology, (str, pathlib.PurePath)):
        path = pathlib.Path(topology)
        return path if path.is_absolute() else test_path.parent / path
    return topology


def _failed(node: pytest.Item) -> Optional[str]:
    return node.stash.get(_FAILED, None)


def _bring_up(registry: _Registry, lab: Lab, verify: bool) -> None:
    """up() that leaves the registry knowing of every lab that may be up."""
    registry.started(lab)
    try:
        lab.up(verify=verify)
    except CheckFailed:
        raise  # up, kept or removed by the caller's teardown
    except Error:
        registry.live.pop(id(lab), None)  # rolled back (or refused): not ours
        raise


class _SharedLabs:
    """The labs of one module (or session): up for the first test, down after the last."""

    def __init__(self, registry: _Registry) -> None:
        self.registry = registry
        self.labs: Dict[str, Tuple[Lab, Optional[BaseException]]] = {}
        self.failed: Dict[str, str] = {}

    def get(self, topology: Topology, verify: bool) -> Lab:
        key = repr(topology)
        if key not in self.labs:
            lab = _new_lab(topology)
            try:
                _bring_up(self.registry, lab, verify)
                self.labs[key] = (lab, None)
            except BaseException as e:  # also Ctrl-C: close() removes what came up
                self.labs[key] = (lab, e)
                raise
        lab, error = self.labs[key]
        if error is not None:
            raise error  # every test of the module sees why its lab is missing
        return lab

    def test_failed(self, topology: Topology, test: str) -> None:
        self.failed.setdefault(repr(topology), test)

    def close(self) -> None:
        errors = []
        for key, (lab, _) in self.labs.items():
            try:
                self.registry.finish(lab, self.failed.get(key))
            except Error as e:
                errors.append(e)
        if errors:
            raise errors[0]


def _shared(request: pytest.FixtureRequest) -> Iterator[_SharedLabs]:
    shared = _SharedLabs(request.config.stash[_REGISTRY])
    try:
        yield shared
    finally:
        shared.close()


_labctl_module_labs = pytest.fixture(scope="module", name="_labctl_module_labs")(_shared)
_labctl_session_labs = pytest.fixture(scope="session", name="_labctl_session_labs")(_shared)


def _marker_args(node: pytest.Item) -> Tuple[Topology, str, bool]:
    marker = node.get_closest_marker("lab")
    if marker is None:
        pytest.fail(f"{node.nodeid}: the `lab` fixture needs @pytest.mark.lab(TOPOLOGY)", pytrace=False)
    args, kwargs = list(marker.args), dict(marker.kwargs)
    topology = kwargs.pop("topology", None) if not args else args.pop(0)
    scope = kwargs.pop("scope", args.pop(0) if args else "function")
    verify = bool(kwargs.pop("verify", True))
    if topology is None or args or kwargs or scope not in _SCOPES:
        pytest.fail(f"{node.nodeid}: bad marker {marker!r}; use {_MARKER_HELP}", pytrace=False)
    return topology, scope, verify


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The lab of the test's ``@pytest.mark.lab(...)``: up and verified before the test,
    removed after it (or after the module with ``scope="module"``)."""
    topology, scope, verify = _marker_args(request.node)
    topology = _resolve(topology, request.path)
    if scope != "function":
        shared: _SharedLabs = request.getfixturevalue(f"_labctl_{scope}_labs")
        the_lab = shared.get(topology, verify)
        yield the_lab
        failed = _failed(request.node)
        if failed:
            shared.test_failed(topology, failed)
        return

    registry = request.config.stash[_REGISTRY]
    the_lab = _new_lab(topology)
    failed: Optional[str] = None
    try:
        try:
            _bring_up(registry, the_lab, verify)
        except CheckFailed:
            failed = request.node.nodeid
            raise
        yield the_lab
    finally:
        registry.finish(the_lab, failed or _failed(request.node))


@pytest.fixture
def lab_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., Lab]]:
    """Builds labs from dicts or files (paths relative to the test file's folder):
    ``lab_factory(topology, up=True, verify=True) -> Lab``. With ``up`` the lab is brought
    up (and verified: CheckFailed when a check fails); every lab it made is removed after
    the test."""
    registry = request.config.stash[_REGISTRY]
    made: List[Lab] = []

    def factory(topology: Topology, up: bool = True, verify: bool = True) -> Lab:
        new = _new_lab(_resolve(topology, request.path))
        made.append(new)
        registry.started(new)
        if up:
            _bring_up(registry, new, verify)
        return new

    try:
        yield factory
    finally:
        failed = _failed(request.node)
        errors = []
        for each in reversed(made):
            try:
                registry.finish(each, failed)
            except Error as e:
                errors.append(e)
        if errors:
            raise errors[0]
