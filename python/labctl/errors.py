"""labctl's exceptions.

Defined here, in Python, so that they can have several bases (a TopologyError is also a
ValueError, an ExecError also a subprocess.CalledProcessError); the C++ module raises
instances of these classes (see python/src/errors.cpp):

    C++ labctl::TopologyError -> TopologyError (.errors, .file)
    C++ labctl::LabError      -> LabError (.errno when the engine gave one)
    C++ labctl::KernelError   -> LabError (.errno, .kernel_message)
"""
from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Iterable, List, Optional, Sequence, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from .lab import CheckResult, ExecResult

__all__ = ["Error", "TopologyError", "LabError", "CheckFailed", "ExecError", "ExecTimeout"]


class Error(Exception):
    """Base of every labctl error."""


class TopologyError(Error, ValueError):
    """The topology is invalid; nothing was touched.

    ``errors`` holds every problem as a ``(pointer, message)`` pair, the pointer an RFC 6901
    JSON pointer into the document ("" for the whole document); ``file`` names the source
    ("<dict>" for a dict). ``str(e)`` is one ``FILE: POINTER: MESSAGE`` line per problem.
    """

    def __init__(self, message: str, errors: Iterable[Tuple[str, str]] = (), file: str = "") -> None:
        super().__init__(message)
        self.errors: List[Tuple[str, str]] = [(str(p), str(m)) for p, m in errors]
        self.file = file


class LabError(Error):
    """An operation on a lab failed or was refused.

    What a failed ``up`` created has been removed again. ``errno`` is the error number when
    the kernel (or the engine, e.g. EEXIST for a lab already up) gave one, else None;
    ``kernel_message`` is the kernel's own extended-ack text when it sent one.
    """

    def __init__(self, message: str, errno: Optional[int] = None, kernel_message: Optional[str] = None) -> None:
        super().__init__(message)
        self.errno = errno if errno else None
        self.kernel_message = kernel_message or None


class CheckFailed(Error):
    """At least one check of ``up`` did not give the expected outcome; the lab stays up.

    ``results`` holds every check's result, failed or not.
    """

    def __init__(self, lab: str, results: Sequence["CheckResult"]) -> None:
        self.lab = lab
        self.results = list(results)
        failed = [r for r in self.results if not r.ok]
        lines = [f"lab {lab}: {len(failed)} of {len(self.results)} checks failed"]
        for r in failed:
            why = f" ({r.reason})" if r.reason else ""
            lines.append(f"  {r.src} -> {r.dst} [{r.address}]: expected {r.expect}, "
                         f"{r.received}/{r.sent} replies{why}")
        super().__init__("\n".join(lines))

    @property
    def failed(self) -> List["CheckResult"]:
        """The results that did not match their expectation."""
        return [r for r in self.results if not r.ok]


class ExecError(Error, subprocess.CalledProcessError):
    """``exec(..., check=True)``: the command exited non-zero (or was killed by a signal).

    Also a ``subprocess.CalledProcessError``: ``returncode``, ``cmd``, ``output``/``stdout``,
    ``stderr``; ``result`` is the whole ExecResult and ``node`` the node it ran in.
    """

    def __init__(self, node: str, result: "ExecResult") -> None:
        subprocess.CalledProcessError.__init__(self, result.returncode, list(result.args),
                                               result.stdout, result.stderr)
        self.node = node
        self.result = result

    def __str__(self) -> str:
        return f"{self.node}: {subprocess.CalledProcessError.__str__(self)}"


class ExecTimeout(Error, subprocess.TimeoutExpired):
    """``exec(..., timeout=T)``: the command ran longer than T seconds; its process group
    was killed. Also a ``subprocess.TimeoutExpired``; ``result`` holds the output read
    before the kill (``returncode`` there is the killing signal, negated)."""

    def __init__(self, node: str, result: "ExecResult", timeout: float) -> None:
        subprocess.TimeoutExpired.__init__(self, list(result.args), timeout, result.stdout, result.stderr)
        self.node = node
        self.result = result

    def __str__(self) -> str:
        return f"{self.node}: {subprocess.TimeoutExpired.__str__(self)}"
