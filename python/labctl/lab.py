"""The Lab object and its result types; a thin layer over labctl._core."""
from __future__ import annotations

import errno
import json
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

from . import _core
from .errors import CheckFailed, Error, ExecError, ExecTimeout, LabError

if TYPE_CHECKING:  # pragma: no cover
    from .capture import Capture

__all__ = ["Lab", "validate", "status", "down", "PingResult", "CheckResult", "ExecResult",
           "Change", "Process", "Topology"]

#: A topology: the path of a JSON file, or the document itself as a dict.
Topology = Union[str, "os.PathLike[str]", Mapping]

#: What a dict is called in messages ("<dict>: /links/0/endpoints/1: no node \"r9\"").
DICT_SOURCE = "<dict>"


@dataclass(frozen=True)
class PingResult:
    """The outcome of :meth:`Lab.ping`.

    ``ok`` is true when at least one reply came; ``rtt_ms`` lists the round-trip time of
    each reply in milliseconds, in the order they came; ``reason`` says why there was no
    reply ("Network is unreachable (ENETUNREACH)", "No reply"), empty when one came.
    """

    src: str
    dst: str
    address: str
    ok: bool
    sent: int
    received: int
    rtt_ms: List[float] = field(default_factory=list)
    reason: str = ""

    # The names of ``labctl ping --json``'s fields, computed from the replies.
    @property
    def loss_pct(self) -> int:
        """Requests without a reply, in percent (rounded, as ping(8) prints it)."""
        return (100 * (self.sent - self.received) + self.sent // 2) // self.sent if self.sent else 100

    @property
    def rtt_min_ms(self) -> Optional[float]:
        return min(self.rtt_ms) if self.rtt_ms else None

    @property
    def rtt_avg_ms(self) -> Optional[float]:
        return sum(self.rtt_ms) / len(self.rtt_ms) if self.rtt_ms else None

    @property
    def rtt_max_ms(self) -> Optional[float]:
        return max(self.rtt_ms) if self.rtt_ms else None


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check (``up``, :meth:`Lab.verify`).

    ``name`` is the check's name, else "FROM -> TO"; ``points`` what it is worth when it
    holds; ``attempts`` more than 1 when it was retried (``within_s``).
    ``kind`` is "ping", "tcp" (a handshake with ``port``) or "command" (``src`` the node,
    ``dst`` the command; ``returncode``, None when it was killed or could not start, and
    ``output``, the end of its stdout and stderr).
    ``src``/``dst`` as written in the topology ("h1", "h1:eth0", "203.0.113.9"), ``address``
    the address pinged (or connected to). ``ok`` is true when the outcome matched ``expect``
    ("reachable" or "unreachable"). A reachable check stops at its first reply, so
    ``rtt_ms`` is one number: the mean round-trip time of the replies in milliseconds (for
    TCP the time the handshake took), None without any.
    ``rtt_min_ms``/``rtt_avg_ms``/``rtt_max_ms`` are those of ``labctl verify --json``
    (None without a reply); the field names are the JSON's.
    """

    src: str
    dst: str
    expect: str
    ok: bool
    sent: int
    received: int
    rtt_ms: Optional[float]
    address: str
    reason: str = ""
    rtt_min_ms: Optional[float] = None
    rtt_avg_ms: Optional[float] = None
    rtt_max_ms: Optional[float] = None
    kind: str = "ping"
    port: Optional[int] = None
    returncode: Optional[int] = None
    output: str = ""
    name: str = ""
    points: float = 1
    attempts: int = 1

    @classmethod
    def _from_core(cls, r: Any) -> "CheckResult":
        got = r.received > 0
        return cls(src=r.src, dst=r.dst, expect=r.expect, ok=r.ok, sent=r.sent, received=r.received,
                   rtt_ms=r.rtt_avg if got else None, address=r.address, reason=r.reason,
                   rtt_min_ms=r.rtt_min if got else None, rtt_avg_ms=r.rtt_avg if got else None,
                   rtt_max_ms=r.rtt_max if got else None,
                   kind=r.kind, port=r.port if r.kind == "tcp" else None,
                   returncode=r.returncode, output=r.output, name=r.name, points=r.points,
                   attempts=r.attempts)


@dataclass(frozen=True)
class ExecResult:
    """The outcome of :meth:`Lab.exec`, like ``subprocess.CompletedProcess``.

    ``returncode`` is the exit code, or minus the signal that killed the command;
    ``stdout``/``stderr`` are text (UTF-8, undecodable bytes replaced).
    """

    node: str
    args: List[str]
    returncode: int
    stdout: str
    stderr: str

    def check_returncode(self) -> None:
        """Raises :class:`labctl.ExecError` when ``returncode`` is not 0."""
        if self.returncode != 0:
            raise ExecError(self.node, self)


class Process:
    """A process started in the background by :meth:`Lab.popen`, like ``subprocess.Popen``.

    It runs in its node's namespace, in a process group of its own, with stdin
    /dev/null and stdout and stderr appended to ``log`` (a file in the lab's state
    directory; :meth:`output` reads it). ``down`` of the lab stops it (TERM, then KILL),
    so a test never leaves it behind. As a context manager it is terminated and
    waited for on exit.
    """

    def __init__(self, node: str, args: List[str], pid: int, log: str) -> None:
        self.node = node
        self.args = args
        self.pid = pid
        self.log = log
        #: The exit code once it has exited (minus the signal that killed it), else None.
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        """The exit code if it has exited, else None (it is still running)."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: gone, status unknown
                self.returncode = -signal.SIGKILL
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        """Waits until it exits and returns its exit code. Raises
        ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        import select
        import subprocess

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            try:
                fd = os.pidfd_open(self.pid)
            except ProcessLookupError:
                continue
            try:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not select.select([fd], [], [], left)[0] and self.poll() is None:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            finally:
                os.close(fd)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Sends ``sig`` to its process group (it and what it started), unless it has exited."""
        if self.poll() is None:  # not yet reaped: the pid (and group) are still its own
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def output(self) -> str:
        """What it has written to stdout and stderr so far."""
        with open(self.log, "rb") as f:
            return _decode(f.read())

    def __enter__(self) -> "Process":
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()
        try:
            self.wait(5.0)
        except Exception:
            self.kill()
            self.wait()

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"returncode={self.returncode}"
        return f"<labctl.Process {self.node}: {self.args!r} pid {self.pid} {state}>"


@dataclass(frozen=True)
class Change:
    """One change of a plan (:meth:`Lab.apply`, runtime changes).

    ``op`` is "+" (added), "-" (removed) or "~" (changed); ``kind`` what changed ("node",
    "link", "interface", "routes", "sysctls", "exec", "daemons"); ``target`` its name
    ("h4", "h1:eth0 <-> sw1:p1", "h1:eth0", "r1"); ``detail`` how
    ("addresses +10.0.1.12/24 -10.0.1.10/24"). ``str(change)`` is the line ``labctl apply``
    prints.
    """

    op: str
    kind: str
    target: str
    detail: str
    line: str = field(repr=False, compare=False, default="")

    def __str__(self) -> str:
        return self.line

    @classmethod
    def _from_core(cls, t: Any) -> "Change":
        return cls(op=t[0], kind=t[1], target=t[2], detail=t[3], line=t[4])


class _PluggedBack:
    """What :meth:`Lab.link_down` returns: as a context manager, plugs the link back on exit."""

    def __init__(self, lab: "Lab", end: str, changes: List[Change]) -> None:
        self._lab, self._end, self.changes = lab, end, changes

    def __enter__(self) -> List[Change]:
        return self.changes

    def __exit__(self, *exc: object) -> None:
        self._lab.link_up(self._end)

    def __iter__(self) -> Any:
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _load(topology: Topology, name: Optional[str] = None) -> "_core.Lab":
    """A validated _core.Lab from a path or a dict, under ``name`` when given.
    Raises TopologyError (LabError for a bad name)."""
    if isinstance(topology, Mapping):
        # json.dumps keeps the dict's key order, and file order matters: a node stands for
        # its first address in file order.
        return _core.Lab.from_text(json.dumps(topology, default=_jsonable), DICT_SOURCE, name or "")
    if isinstance(topology, (str, os.PathLike)):
        path = os.fspath(topology)
        if not os.path.lexists(path):  # an OSError, as open() raises, not an invalid topology
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return _core.Lab.from_file(path, name or "")
    raise TypeError(f"a topology is a path or a dict, not {type(topology).__name__}")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"a topology holds JSON values only, not {type(obj).__name__}")


def _env(env: Optional[Mapping[str, str]]) -> Dict[str, str]:
    return {str(k): os.fspath(v) for k, v in (env or {}).items()}


def _cwd(cwd: Union[str, "os.PathLike[str]", None]) -> str:
    return os.path.abspath(os.fspath(cwd)) if cwd is not None else ""


def validate(topology: Topology) -> None:
    """Validates a topology (a path or a dict) without touching anything.

    Raises :class:`labctl.TopologyError` listing every problem with its JSON pointer.
    """
    _load(topology)


def _require_entered() -> None:
    """Without root, labs live in the user's own user namespace (docs/rootless.md), joined
    when labctl was imported; when that failed, its reason is the error of every call that
    needs a lab (as the CLI's exit 3)."""
    why = _core.rootless_error()
    if why:
        raise LabError(why, errno.EPERM)


def status() -> List[Dict[str, Any]]:
    """Every lab labctl knows of, as ``labctl status --json`` lists them."""
    _require_entered()
    return _core.status_all()


def down(name: str) -> bool:
    """Removes the lab called ``name`` (``labctl down NAME``); False when it was not there."""
    _require_entered()
    return _core.down(name)


class Lab:
    """A lab described by a topology (a file path or a dict).

    Creating one validates the topology and touches nothing; :meth:`up` builds it.
    As a context manager it is brought up (and verified) on entry and removed on exit,
    also when the block raises::

        with labctl.Lab("topo.json") as lab:
            assert lab.ping("h1", "h2").ok
    """

    def __init__(self, topology: Topology, name: Optional[str] = None) -> None:
        #: ``name`` runs the topology under another lab name (an instance: namespaces
        #: ``<name>-<node>``), so one file can be up many times on one machine.
        self._lab = _load(topology, name)
        #: Notes of the last up(), e.g. that leftovers of an interrupted up were removed.
        self.notes: List[str] = []
        # True while this object may have a lab up: from just before up() until down().
        # Only an owned lab is removed by __exit__ and the pytest fixtures, so that a
        # refused up() ("already up") never removes somebody else's lab of that name.
        self._owned = False
        self._attached = False

    @classmethod
    def attach(cls, name: str) -> "Lab":
        """The running lab called ``name``. Raises :class:`labctl.LabError` when it is not up.

        As a context manager (``with Lab.attach(name) as lab:``) it is not brought up on
        entry (it is up) and is taken down on exit."""
        _require_entered()
        self = cls.__new__(cls)
        self._lab = _core.Lab.attach(name)
        self.notes = []
        self._owned = False
        self._attached = True
        return self

    @property
    def name(self) -> str:
        """The lab's name."""
        return self._lab.name

    @property
    def description(self) -> str:
        return self._lab.description

    @property
    def nodes(self) -> List[str]:
        """The node names, in file order."""
        return list(self._lab.nodes)

    def netns(self, node: str) -> str:
        """The name of the node's network namespace (``ip netns exec NAME ...``)."""
        if node not in self._lab.nodes:
            raise KeyError(node)
        return f"{self.name}-{node}"

    @property
    def is_up(self) -> bool:
        """True while this topology is the one up under the lab's name (a lab of that
        name built from another topology does not count)."""
        return self._lab.runs_this_topology()

    def up(self, verify: bool = True) -> List[CheckResult]:
        """Builds the lab, then (with ``verify``) runs its checks; returns their results.

        Raises :class:`labctl.LabError` when building fails (everything built is removed
        again, ``.errno`` says why) or the lab is already up; :class:`labctl.CheckFailed`
        when a check fails (the lab stays up, ``.results`` has every result).
        """
        was_owned, self._owned = self._owned, True
        try:
            result = self._lab.up(verify)
        except CheckFailed:
            raise
        except Error:
            self._owned = was_owned  # rolled back, or refused: nothing new of ours is up
            raise
        self.notes = list(result.notes)
        checks = [CheckResult._from_core(c) for c in result.checks]
        if not all(c.ok for c in checks):
            raise CheckFailed(self.name, checks)
        return checks

    def verify(self, all_pairs: bool = False) -> List[CheckResult]:
        """Runs the topology's checks (or, with ``all_pairs``, pings every node from every
        other node) and returns the results; failures are results, not exceptions.
        Raises :class:`labctl.LabError` when the lab is not up, or runs another topology than
        this one (an edited file: apply it first), as ``labctl verify FILE`` refuses it."""
        self._lab.require_same_topology()
        return [CheckResult._from_core(c) for c in self._lab.verify(all_pairs)]

    def ping(self, src: str, dst: str, count: int = 3, timeout: float = 1.0,
             interval: float = 0.2, family: Optional[int] = None) -> PingResult:
        """Sends ``count`` echo requests ``interval`` seconds apart from ``src`` (a node, or
        ``node:ifname`` to send out of that interface) to ``dst`` (a node, ``node:ifname``
        or an address; a node stands for its first address, IPv4 first, or of ``family``
        4 or 6, like ``labctl ping -4/-6``) and waits up to ``timeout`` seconds after the
        last one. Raises ValueError for a count outside 1 to ``labctl ping``'s maximum or
        another family, :class:`labctl.LabError` for unknown names or a lab that is not up."""
        if not 1 <= count <= _core.MAX_PING_COUNT:
            raise ValueError(f"count must be 1 to {_core.MAX_PING_COUNT}, not {count}")
        if family not in (None, 4, 6):
            raise ValueError(f"family must be 4 or 6, not {family!r}")
        r = self._lab.ping(src, dst, count, timeout, interval, family or 0)
        return PingResult(src=src, dst=dst, address=r.address, ok=r.received > 0, sent=r.sent,
                          received=r.received, rtt_ms=[x.rtt_ms for x in r.replies], reason=r.reason)

    def exec(self, node: str, argv: Union[Sequence[str], str], timeout: Optional[float] = None,
             check: bool = False, input: Union[str, bytes, None] = None,
             env: Optional[Mapping[str, str]] = None,
             cwd: Union[str, "os.PathLike[str]", None] = None) -> ExecResult:
        """Runs ``argv`` in ``node``'s namespace, output captured, like ``subprocess.run``.

        A string instead of a list is run by ``/bin/sh -c`` (as in the topology's ``exec``).
        ``input`` (str or bytes) is fed to stdin, else stdin is /dev/null. After ``timeout``
        seconds the command's process group is killed and :class:`labctl.ExecTimeout`
        (a ``subprocess.TimeoutExpired``) raised. With ``check``, a non-zero exit raises
        :class:`labctl.ExecError` (a ``subprocess.CalledProcessError``). ``env`` adds
        variables to (or replaces them in) the environment; ``cwd`` is the working
        directory (else the caller's). Raises
        :class:`labctl.LabError` for an unknown node, a lab that is not up, or a command
        that cannot be started (``.errno`` ENOENT for a missing program).
        """
        if isinstance(argv, str):
            args = ["/bin/sh", "-c", argv]
        else:
            args = [os.fspath(a) for a in argv]
        data = input.encode() if isinstance(input, str) else input
        r = self._lab.exec(node, args, data, timeout, _env(env), _cwd(cwd))
        result = ExecResult(node=node, args=args, returncode=r.returncode, stdout=_decode(r.stdout),
                            stderr=_decode(r.stderr))
        if r.timed_out:
            raise ExecTimeout(node, result, timeout if timeout is not None else 0.0)
        if check:
            result.check_returncode()
        return result

    def popen(self, node: str, argv: Union[Sequence[str], str],
              env: Optional[Mapping[str, str]] = None,
              cwd: Union[str, "os.PathLike[str]", None] = None) -> Process:
        """Starts ``argv`` in ``node``'s namespace in the background and returns its
        :class:`Process` handle at once (a server in one node, a client in another)::

            with lab.popen("h2", ["python3", "-m", "http.server", "80"]) as server:
                lab.exec("h1", ["curl", "-s", "http://10.0.2.10/"], check=True)

        Output goes to ``Process.log``. The process is stopped with the lab (``down``),
        also when the test fails. A string is run by ``/bin/sh -c``; ``env`` and ``cwd``
        as for :meth:`exec`. Raises :class:`labctl.LabError` for an unknown node, a lab
        that is not up, or a program that cannot be started."""
        args = ["/bin/sh", "-c", argv] if isinstance(argv, str) else [os.fspath(a) for a in argv]
        pid, _, log = self._lab.start(node, args, _env(env), _cwd(cwd))
        return Process(node, args, pid, log)

    def capture(self, interfaces: Union[Sequence[str], str], path: Union[str, "os.PathLike[str]"], *,
                filter: Optional[str] = None, count: Optional[int] = None,
                duration: Optional[float] = None) -> "Capture":
        """Starts capturing packets on ``interfaces`` (``["h1:eth0", "r1:eth1"]``, or
        ``labctl.ALL`` for every interface but ``lo`` and bridges) into the pcapng file ``path``, like
        ``labctl capture``: capturing when it returns, until stopped (the returned
        :class:`labctl.Capture` is a context manager), ``count`` packets or ``duration``
        seconds. ``filter`` is a BPF expression (``"icmp or arp"``). Raises
        :class:`labctl.LabError` for unknown names, a bad filter (nothing is captured)
        or a lab that is not up."""
        from .capture import Capture
        return Capture(self._lab, interfaces, path, filter=filter, count=count, duration=duration)

    def status(self) -> Dict[str, Any]:
        """The lab's nodes, namespaces, interfaces, addresses, states and daemons: the same
        dict as ``labctl status LAB --json``."""
        return self._lab.status()

    def down(self) -> bool:
        """Removes the lab: processes, namespaces, state. False when it was not up.
        Raises :class:`labctl.LabError` when something could not be removed."""
        removed = self._lab.down()
        self._owned = False
        return removed

    def apply(self, topology: Optional[Topology] = None, dry_run: bool = False,
              verify: bool = True) -> List[Change]:
        """Makes the running lab match ``topology`` (default: its own, which repairs what
        was changed by hand and undoes runtime changes), touching only what differs, and
        returns the changes (``labctl apply``). A lab that is not up is brought up. With
        ``dry_run`` nothing is touched. Raises :class:`labctl.LabError` when a change
        fails (the lab is back to its previous topology), :class:`labctl.CheckFailed`
        when a check fails afterwards (the lab runs the new topology).
        """
        new = self._lab if topology is None else _load(topology, self.name)
        if topology is not None and new.name != self.name:
            raise ValueError(f"the topology is lab {new.name!r}, not {self.name!r}")
        was_owned = self._owned
        if not dry_run:
            self._owned = True
        try:
            changes, checks, notes, _brought_up = new.apply(dry_run, verify)
        except CheckFailed:
            raise
        except Error:
            self._owned = was_owned or self._lab.is_up()
            raise
        result = [Change._from_core(c) for c in changes]
        if dry_run:
            return result
        self._lab = new
        self.notes = list(notes)
        results = [CheckResult._from_core(c) for c in checks]
        if not all(c.ok for c in results):
            raise CheckFailed(self.name, results)
        return result

    def link_down(self, end: str) -> _PluggedBack:
        """Pulls the cable of the link ``end`` ("node:ifname", either end) belongs to: the
        end goes down and its peer loses carrier. Kept until :meth:`link_up`,
        :meth:`apply` or :meth:`down`. Returns the changes; as a context manager the link
        is plugged back on exit::

            with lab.link_down("r1:eth1"):
                assert not lab.ping("h1", "h2").ok
        """
        return _PluggedBack(self, end, [Change._from_core(c) for c in self._lab.link_state(end, False)])

    def link_up(self, end: str) -> List[Change]:
        """Plugs the link back: both ends up, every address and route of the file again."""
        return [Change._from_core(c) for c in self._lab.link_state(end, True)]

    def impair(self, end: str, delay_ms: Optional[float] = None, jitter_ms: Optional[float] = None,
               loss_pct: Optional[float] = None, rate_mbit: Optional[float] = None,
               duplicate_pct: Optional[float] = None, reorder_pct: Optional[float] = None) -> List[Change]:
        """Replaces the impairment of the link ``end`` belongs to, on both ends (as
        ``impair`` in the file); without any value, removes it."""
        return [Change._from_core(c) for c in self._lab.impair(end, delay_ms, jitter_ms, loss_pct, rate_mbit,
                                                               duplicate_pct, reorder_pct)]

    def node_stop(self, node: str) -> List[Change]:
        """Powers the node off: its processes are killed, its interfaces go down."""
        return [Change._from_core(c) for c in self._lab.node_power(node, "stop")]

    def node_start(self, node: str) -> List[Change]:
        """Powers the node on: interfaces, addresses, routes as in the file, exec run again,
        daemons started."""
        return [Change._from_core(c) for c in self._lab.node_power(node, "start")]

    def node_restart(self, node: str) -> List[Change]:
        """:meth:`node_stop`, then :meth:`node_start`."""
        return [Change._from_core(c) for c in self._lab.node_power(node, "restart")]

    def __enter__(self) -> "Lab":
        if self._attached:  # Lab.attach(name): up already; ours to take down on exit
            self._owned = True
            return self
        try:
            self.up()
        except CheckFailed:
            self._down_quietly()
            raise
        except Error:
            raise  # nothing of ours is up
        except BaseException:  # e.g. KeyboardInterrupt delivered as up() returned
            self._down_quietly()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _down_quietly(self) -> None:
        try:
            self.down()
        except Error:
            pass  # the error being raised is the one to see

    def __repr__(self) -> str:
        return f"<labctl.Lab {self.name!r}: {len(self._lab.nodes)} nodes from {self._lab.source}>"
