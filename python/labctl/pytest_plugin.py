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

Topology files as tests: a topology file given on the command line, or matched by the ini
option ``labctl_topologies`` (glob patterns relative to the rootdir, e.g.
``labs/*/topology.json``), is collected: each of its checks becomes a test item, named by
the check's ``name`` (else ``FROM -> TO``), its points recorded as the JUnit property
``points``. The lab comes up once per file (before its first check) and goes down after
its last, so ``pytest labs/quickstart/topology.json --junitxml=r.xml`` grades a lab.

With ``--labctl-capture`` every interface of every fixture lab (``lab``, ``lab_factory``) is
recorded during each test into one pcapng file per test and lab, in
``--labctl-capture-dir`` (default ``labctl-captures``). A failed test keeps its file and
its report names it; a passing test leaves nothing. A function-scoped ``lab`` is recorded
from before its checks run, so a lab whose checks fail has them on record.
"""
from __future__ import annotations

import fnmatch
import itertools
import json
import os
import pathlib
import re
from typing import TYPE_CHECKING, Any, Callable, Dict, Generator, Iterator, List, NoReturn, Optional, Tuple, Union

import pytest

from .capture import ALL, Capture
from .errors import CheckFailed, Error
from .lab import CheckResult, Lab, Topology

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr

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


class _Recorder:
    """--labctl-capture: a capture per test and lab, kept only when the test failed."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        self.kept: List[Tuple[str, pathlib.Path]] = []  # (failed test, file)

    def path_for(self, item: pytest.Item, lab: Lab) -> pathlib.Path:
        test = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid).strip("_")[:150]
        return self.directory / f"{test}--{lab.name}.pcapng"

    def start(self, item: pytest.Item, lab: Lab) -> None:
        recording = _captures(item)
        if lab.name in recording:
            return
        path = self.path_for(item, lab)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            recording[lab.name] = (path, lab.capture(ALL, path))
        except (Error, OSError) as e:
            item.warn(pytest.PytestWarning(f"labctl: cannot record lab {lab.name}: {e}"))

    def stop(self, item: pytest.Item, lab: Lab, failed: Optional[str]) -> None:
        """Completes the lab's file for this test; removes it unless the test failed."""
        entry = _captures(item).pop(lab.name, None)
        if entry is None:
            return
        path, capture = entry
        try:
            capture.stop()
        finally:
            if failed:
                self.kept.append((failed, path))
            else:
                path.unlink(missing_ok=True)


_REGISTRY = pytest.StashKey[_Registry]()
_RECORDER = pytest.StashKey[Optional[_Recorder]]()
_FAILED = pytest.StashKey[str]()
_CAPTURES = pytest.StashKey[Dict[str, Tuple[pathlib.Path, Capture]]]()


def _captures(item: pytest.Item) -> Dict[str, Tuple[pathlib.Path, Capture]]:
    """The captures recording for ITEM, by lab name (made empty on first use)."""
    if _CAPTURES not in item.stash:
        empty: Dict[str, Tuple[pathlib.Path, Capture]] = {}
        item.stash[_CAPTURES] = empty
    return item.stash[_CAPTURES]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("labctl")
    group.addoption("--labctl-keep", action="store_true", default=False,
                    help="keep the lab of a failed test up for inspection; its name is printed "
                         "at the end of the run (remove it with `labctl down NAME`)")
    parser.addini("labctl_topologies", type="args", default=[],
                  help="glob patterns (relative to the rootdir) of topology files whose "
                       "checks are collected as tests, e.g. labs/*/topology.json")
    group.addoption("--labctl-capture", action="store_true", default=False,
                    help="record every interface of each fixture lab during each test into a "
                         "pcapng file; keep the files of failed tests (named in their reports)")
    group.addoption("--labctl-capture-dir", default="labctl-captures", metavar="DIR",
                    help="where --labctl-capture keeps the files of failed tests "
                         "(default: labctl-captures, relative to the current directory)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)
    config.stash[_REGISTRY] = _Registry(bool(config.getoption("labctl_keep", False)))
    recorder = None
    if config.getoption("labctl_capture", False):
        directory = pathlib.Path(config.getoption("labctl_capture_dir"))
        recorder = _Recorder(directory if directory.is_absolute()
                             else config.invocation_params.dir / directory)
    config.stash[_RECORDER] = recorder


def pytest_unconfigure(config: pytest.Config) -> None:
    # Fixtures are torn down even on Ctrl-C; this catches what a second Ctrl-C during a
    # teardown left behind.
    registry = config.stash.get(_REGISTRY, None)
    if registry is not None:
        registry.remove_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        item.stash[_FAILED] = item.nodeid
        for lab_name, (path, _) in item.stash.get(_CAPTURES, {}).items():
            report.sections.append(("labctl capture",
                                    f"packets of lab {lab_name} during this test: {path}"))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    recorder = config.stash.get(_RECORDER, None)
    if recorder is not None and recorder.kept:
        terminalreporter.write_sep("-", "labctl: packets of failed tests (--labctl-capture)")
        for test, path in recorder.kept:
            terminalreporter.write_line(f"labctl: {test}: {path}")
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
    return node.stash[_FAILED] if _FAILED in node.stash else None


def _fail(error: BaseException) -> NoReturn:
    """Fails the test with labctl's message alone: no traceback through the plugin."""
    __tracebackhide__ = True
    pytest.fail(f"labctl: {type(error).__name__}: {error}", pytrace=False)


def _bring_up(registry: _Registry, lab: Lab, verify: bool,
              record: Optional[Tuple[_Recorder, pytest.Item]] = None) -> None:
    """up() that leaves the registry knowing of every lab that may be up. With `record`,
    the lab is recorded for that test from before its checks run."""
    registry.started(lab)
    try:
        if record is None:
            lab.up(verify=verify)
        else:
            lab.up(verify=False)
            record[0].start(record[1], lab)
            if verify:
                results = lab.verify()
                if not all(r.ok for r in results):
                    raise CheckFailed(lab.name, results)
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
        __tracebackhide__ = True
        key = repr(topology)
        if key not in self.labs:
            try:
                lab = _new_lab(topology)
            except (Error, OSError) as e:
                _fail(e)
            try:
                _bring_up(self.registry, lab, verify)
                self.labs[key] = (lab, None)
            except BaseException as e:  # also Ctrl-C: close() removes what came up
                self.labs[key] = (lab, e)
                if isinstance(e, Error):
                    _fail(e)
                raise
        lab, error = self.labs[key]
        if isinstance(error, Error):
            _fail(error)  # every test of the module sees why its lab is missing
        if error is not None:
            raise error
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
    removed after it (or after the module with ``scope="module"``). A lab that cannot
    be built fails the test with labctl's message (an invalid topology: every pointer)."""
    __tracebackhide__ = True
    topology, scope, verify = _marker_args(request.node)
    topology = _resolve(topology, request.path)
    if scope != "function":
        shared: _SharedLabs = request.getfixturevalue(f"_labctl_{scope}_labs")
        the_lab = shared.get(topology, verify)
        recorder = request.config.stash[_RECORDER]
        if recorder is not None:
            recorder.start(request.node, the_lab)
        try:
            yield the_lab
        finally:
            failed_by = _failed(request.node)
            if recorder is not None:
                recorder.stop(request.node, the_lab, failed_by)
            if failed_by:
                shared.test_failed(topology, failed_by)
        return

    registry = request.config.stash[_REGISTRY]
    recorder = request.config.stash[_RECORDER]
    record = (recorder, request.node) if recorder is not None else None
    try:
        the_lab = _new_lab(topology)
    except (Error, OSError) as e:
        _fail(e)
    failed: Optional[str] = None
    try:
        try:
            _bring_up(registry, the_lab, verify, record)
        except CheckFailed as e:
            failed = request.node.nodeid
            _fail(e)
        except Error as e:
            _fail(e)
        yield the_lab
    finally:
        try:
            if recorder is not None:
                recorder.stop(request.node, the_lab, failed or _failed(request.node))
        finally:
            registry.finish(the_lab, failed or _failed(request.node))


@pytest.fixture
def lab_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., Lab]]:
    """Builds labs from dicts or files (paths relative to the test file's folder):
    ``lab_factory(topology, up=True, verify=True) -> Lab``. With ``up`` the lab is brought
    up (and verified: CheckFailed when a check fails); every lab it made is removed after
    the test."""
    registry = request.config.stash[_REGISTRY]
    recorder = request.config.stash[_RECORDER]
    record = (recorder, request.node) if recorder is not None else None
    made: List[Lab] = []

    def factory(topology: Topology, up: bool = True, verify: bool = True) -> Lab:
        new = _new_lab(_resolve(topology, request.path))
        made.append(new)
        registry.started(new)
        if up:
            _bring_up(registry, new, verify, record)
        return new

    try:
        yield factory
    finally:
        failed = _failed(request.node)
        errors = []
        for each in reversed(made):
            try:
                try:
                    if recorder is not None:
                        recorder.stop(request.node, each, failed)
                finally:
                    registry.finish(each, failed)
            except Error as e:
                errors.append(e)
        if errors:
            raise errors[0]


# ---- topology files as tests ---------------------------------------------------------------


def _given_on_command_line(config: pytest.Config, path: pathlib.Path) -> bool:
    for arg in config.args:
        given = pathlib.Path(str(arg).split("::", 1)[0])
        if not given.is_absolute():
            given = pathlib.Path(config.invocation_params.dir) / given
        if given.resolve() == path.resolve():
            return True
    return False


def _matches_ini(config: pytest.Config, path: pathlib.Path) -> bool:
    patterns = config.getini("labctl_topologies")
    if not patterns:
        return False
    try:
        relative = path.resolve().relative_to(pathlib.Path(config.rootpath).resolve()).as_posix()
    except ValueError:
        return False
    return any(fnmatch.fnmatch(relative, pattern) for pattern in patterns)


def pytest_collect_file(file_path: pathlib.Path, parent: pytest.Collector) -> Optional[pytest.Collector]:
    if file_path.suffix != ".json":
        return None
    if _given_on_command_line(parent.config, file_path) or _matches_ini(parent.config, file_path):
        return TopologyFile.from_parent(parent, path=file_path)
    return None


def check_label(check: Dict[str, Any]) -> str:
    """What a check is called in reports, as ``labctl verify --junit`` calls it: its
    ``name``, else ``FROM -> TO`` (a TCP check adds `` port N``; a command check is
    ``NODE: COMMAND``)."""
    if check.get("name"):
        return str(check["name"])
    if "on" in check:
        return f"{check['on']}: {' '.join(check.get('run', []))}"
    port = f" port {check['port']}" if "port" in check else ""
    return f"{check.get('from')} -> {check.get('to')}{port}"


class TopologyFile(pytest.File):
    """A topology file: one item per check; the lab is up while its items run."""

    def collect(self) -> Iterator["CheckItem"]:
        # Validates (a bad file is a collection error). An instance of its own, as fixture
        # labs: pytest-xdist workers collecting the same file, or a lab of the file's name
        # the user has up, never meet it.
        self.lab = _new_lab(self.path)
        doc = json.loads(self.path.read_text())
        seen: Dict[str, int] = {}
        for index, check in enumerate(doc.get("checks", [])):
            label = check_label(check)
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > 1:
                label = f"{label} [{seen[label]}]"
            yield CheckItem.from_parent(self, name=label, index=index,
                                        points=check.get("points", 1))

    def setup(self) -> None:
        registry = self.config.stash[_REGISTRY]
        self.results: List[CheckResult] = []
        self.failed: Optional[str] = None
        _bring_up(registry, self.lab, verify=False)
        self.results = self.lab.verify()

    def teardown(self) -> None:
        self.config.stash[_REGISTRY].finish(self.lab, self.failed)


class CheckFailure(Exception):
    """A check of a collected topology file did not hold."""


class CheckItem(pytest.Item):
    def __init__(self, *, index: int, points: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index = index
        self.points = points
        self.user_properties.append(("points", points))

    def runtest(self) -> None:
        topology: TopologyFile = self.parent  # type: ignore[assignment]
        result = topology.results[self.index]
        if not result.ok:
            topology.failed = topology.failed or self.nodeid
            raise CheckFailure(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Optional[str] = None) -> Union[str, TerminalRepr]:
        if isinstance(excinfo.value, CheckFailure):
            r: CheckResult = excinfo.value.args[0]
            text = f"{self.name}: {r.reason or 'failed'}"
            if r.output:
                text += "\n" + "\n".join("  | " + line for line in r.output.splitlines())
            return text
        return super().repr_failure(excinfo, style=style)  # type: ignore[arg-type]

    def reportinfo(self) -> Tuple[Any, Optional[int], str]:
        return self.path, None, f"check {self.index}: {self.name}"
