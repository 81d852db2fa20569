"""The Lab object and its result types; a thin layer over labctl._core."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

from . import _core
from .errors import CheckFailed, Error, ExecError, ExecTimeout

__all__ = ["Lab", "validate", "status", "down", "PingResult", "CheckResult", "ExecResult",
           "Change", "Topology"]

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


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check (``up``, :meth:`Lab.verify`).

    ``src``/``dst`` as written in the topology ("h1", "h1:eth0", "203.0.113.9"), ``address``
    the address pinged. ``ok`` is true when the outcome matched ``expect`` ("reachable" or
    "unreachable"). A reachable check stops at its first reply, so ``rtt_ms`` is one
    number: the mean round-trip time of the replies in milliseconds, None without any.
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

    @classmethod
    def _from_core(cls, r: Any) -> "CheckResult":
        return cls(src=r.src, dst=r.dst, expect=r.expect, ok=r.ok, sent=r.sent, received=r.received,
                   rtt_ms=r.rtt_avg if r.received else None, address=r.address, reason=r.reason)


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
        return _core.Lab.from_file(os.fspath(topology), name or "")
    raise TypeError(f"a topology is a path or a dict, not {type(topology).__name__}")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"a topology holds JSON values only, not {type(obj).__name__}")


def validate(topology: Topology) -> None:
    """Validates a topology (a path or a dict) without touching anything.

    Raises :class:`labctl.TopologyError` listing every problem with its JSON pointer.
    """
    _load(topology)


def status() -> List[Dict[str, Any]]:
    """Every lab labctl knows of, as ``labctl status --json`` lists them."""
    return _core.status_all()


def down(name: str) -> bool:
    """Removes the lab called ``name`` (``labctl down NAME``); False when it was not there."""
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

    @classmethod
    def attach(cls, name: str) -> "Lab":
        """The running lab called ``name``. Raises :class:`labctl.LabError` when it is not up."""
        self = cls.__new__(cls)
        self._lab = _core.Lab.attach(name)
        self.notes = []
        self._owned = False
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
        """True while the lab is up (its state says so)."""
        return self._lab.is_up()

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
        Raises :class:`labctl.LabError` when the lab is not up."""
        return [CheckResult._from_core(c) for c in self._lab.verify(all_pairs)]

    def ping(self, src: str, dst: str, count: int = 3, timeout: float = 1.0,
             interval: float = 0.2) -> PingResult:
        """Sends ``count`` echo requests ``interval`` seconds apart from ``src`` (a node, or
        ``node:ifname`` to send out of that interface) to ``dst`` (a node, ``node:ifname``
        or an address; a node stands for its first address, IPv4 first) and waits up to
        ``timeout`` seconds after the last one. Raises :class:`labctl.LabError` for unknown
        names or a lab that is not up."""
        r = self._lab.ping(src, dst, count, timeout, interval)
        return PingResult(src=src, dst=dst, address=r.address, ok=r.received > 0, sent=r.sent,
                          received=r.received, rtt_ms=[x.rtt_ms for x in r.replies], reason=r.reason)

    def exec(self, node: str, argv: Union[Sequence[str], str], timeout: Optional[float] = None,
             check: bool = False, input: Union[str, bytes, None] = None) -> ExecResult:
        """Runs ``argv`` in ``node``'s namespace, output captured, like ``subprocess.run``.

        A string instead of a list is run by ``/bin/sh -c`` (as in the topology's ``exec``).
        ``input`` (str or bytes) is fed to stdin, else stdin is /dev/null. After ``timeout``
        seconds the command's process group is killed and :class:`labctl.ExecTimeout`
        (a ``subprocess.TimeoutExpired``) raised. With ``check``, a non-zero exit raises
        :class:`labctl.ExecError` (a ``subprocess.CalledProcessError``). Raises
        :class:`labctl.LabError` for an unknown node, a lab that is not up, or a command
        that cannot be started (``.errno`` ENOENT for a missing program).
        """
        if isinstance(argv, str):
            args = ["/bin/sh", "-c", argv]
        else:
            args = [os.fspath(a) for a in argv]
        data = input.encode() if isinstance(input, str) else input
        r = self._lab.exec(node, args, data, timeout)
        result = ExecResult(node=node, args=args, returncode=r.returncode, stdout=_decode(r.stdout),
                            stderr=_decode(r.stderr))
        if r.timed_out:
            raise ExecTimeout(node, result, timeout if timeout is not None else 0.0)
        if check:
            result.check_returncode()
        return result

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
