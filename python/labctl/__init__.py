"""labctl: virtual network labs from a JSON topology.

    import labctl
    with labctl.Lab("topo.json") as lab:      # up (and verified) on entry, down on exit
        assert lab.ping("h1", "h3").ok
        print(lab.exec("h1", ["ip", "-j", "addr"]).stdout)

The engine is C++ (labctl._core); this package is the API. See docs/python.md.
"""
from .errors import CheckFailed, Error, ExecError, ExecTimeout, LabError, TopologyError
from ._core import __version__
from .capture import ALL, Capture, CaptureStats, InterfaceStats
from .lab import Change, CheckResult, ExecResult, Lab, PingResult, Process, Topology, down, status, validate

__all__ = [
    "__version__",
    "Lab", "validate", "status", "down",
    "PingResult", "CheckResult", "ExecResult", "Change", "Process", "Topology",
    "Capture", "CaptureStats", "InterfaceStats", "ALL",
    "Error", "TopologyError", "LabError", "CheckFailed", "ExecError", "ExecTimeout",
]
