"""Packet capture: :meth:`labctl.Lab.capture` and what it returns.

    with lab.capture(["h1:eth0", "r1:eth1"], "out.pcapng") as cap:
        lab.ping("h1", "h3")
    print(cap.stats.captured, "packets in", cap.path)

One pcapng file for all the interfaces, one interface block per ``NODE:IFNAME`` named so
(Wireshark's interface column shows ``h1:eth0``), packets in time order with nanosecond
timestamps; the same as ``labctl capture``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Union

from . import _core

__all__ = ["Capture", "CaptureStats", "InterfaceStats", "ALL"]

#: ``lab.capture(labctl.ALL, path)``: every interface of every node but ``lo`` and
#: bridges, whose ports carry the same frames (``labctl capture LAB --all``).
ALL = "all"


@dataclass(frozen=True)
class InterfaceStats:
    """Counts of one interface: ``captured`` written to the file, ``received`` handed over
    by the kernel (after the filter), ``kernel_drops`` lost because the reader fell behind."""

    interface: str
    captured: int
    received: int
    kernel_drops: int


@dataclass(frozen=True)
class CaptureStats:
    """Counts of a finished capture, in total and per interface."""

    captured: int
    received: int
    kernel_drops: int
    interfaces: List[InterfaceStats] = field(default_factory=list)
    #: Packets written after one stamped later (they reached labctl late); 0: in time order.
    out_of_order: int = 0

    @classmethod
    def _from_core(cls, s: Any) -> "CaptureStats":
        return cls(captured=s.captured, received=s.received, kernel_drops=s.kernel_drops,
                   out_of_order=s.out_of_order,
                   interfaces=[InterfaceStats(i.interface, i.captured, i.received, i.kernel_drops)
                               for i in s.interfaces])


class Capture:
    """A capture running in the background into :attr:`path`; returned by
    :meth:`labctl.Lab.capture`, already capturing. As a context manager it is stopped on
    exit (the file is then complete); :meth:`stop` does the same by hand."""

    def __init__(self, lab: "_core.Lab", interfaces: Union[Sequence[str], str],
                 path: Union[str, "os.PathLike[str]"], filter: Optional[str] = None,
                 count: Optional[int] = None, duration: Optional[float] = None) -> None:
        if isinstance(interfaces, str):
            if interfaces != ALL:
                raise ValueError(f"interfaces: a list of NODE:IFNAME, or labctl.ALL, not {interfaces!r}")
            names: List[str] = []
        else:
            names = [str(i) for i in interfaces]
            if not names:
                raise ValueError("interfaces: name at least one NODE:IFNAME (or use labctl.ALL)")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1")
        self.path = os.fspath(path)
        #: The counts, once stopped.
        self.stats: Optional[CaptureStats] = None
        self._running = _core.capture_start(lab, names, isinstance(interfaces, str), self.path,
                                            filter or "", count or 0, duration)

    def wait(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds for the capture to end by itself (its ``count``
        or ``duration``); True when it has. :meth:`stop` must still be called (or the
        ``with`` block left) for the counts."""
        return self._running.wait(timeout)

    def stop(self) -> CaptureStats:
        """Stops capturing, writes out every packet captured until now, completes the
        file and returns the counts. Calling it again returns the same counts.
        Raises :class:`labctl.LabError` when writing the file failed."""
        if self.stats is None:
            self.stats = CaptureStats._from_core(self._running.stop())
        return self.stats

    def __enter__(self) -> "Capture":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.stats is None else f"{self.stats.captured} packets"
        return f"<labctl.Capture {self.path!r}: {state}>"
