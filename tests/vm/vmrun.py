"""Running tests under a stock kernel in a VM, and knowing when one has to.

    from vmrun import kernel_has, run_in_vm
    if not kernel_has("netem"):
        rc, output = run_in_vm(["/usr/bin/python3", "-m", "pytest", ...], cwd=repo, timeout=600)

run_in_vm boots tests/vm/run (one boot per call: give it one command that runs many
tests). kernel_has looks at the *current* kernel only.
"""

from __future__ import annotations

import gzip
import os
import platform
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUN = HERE / "run"
PREPARE = HERE / "prepare"

# Exit codes of tests/vm/run that are its own, not the command's.
TIMED_OUT = 124
VM_FAILED = 125


class VmUnavailable(RuntimeError):
    """qemu or the stock kernel cannot be had on this machine (not a test failure)."""


def prepare() -> None:
    """Installs and caches what the VM needs (idempotent; quick once done)."""
    if os.geteuid() != 0:
        raise VmUnavailable("the test VM needs root (apt-get, 9p passthrough of /)")
    proc = subprocess.run([str(PREPARE)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise VmUnavailable("tests/vm/prepare failed: " + proc.stderr.strip()[-2000:])


def run_in_vm(argv: list[str], cwd: str | os.PathLike, timeout: float) -> tuple[int, str]:
    """Runs argv in cwd inside the VM; returns (exit code, stdout and stderr together).

    The exit code is argv's own, or 124 when the VM ran past timeout seconds, or 125
    when the VM could not run it (the output then says why)."""
    seconds = max(1, int(timeout))
    proc = subprocess.run(
        [str(RUN), "--timeout", str(seconds), "--", *argv],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # run's own timeout stops qemu; this one only guards against run itself hanging.
        timeout=seconds + 120,
    )
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


# feature -> (kernel config symbols that must all be y or m, module to look for)
_FEATURES = {
    "netem": (("NET_SCH_NETEM",), "sch_netem"),
    "tbf": (("NET_SCH_TBF",), "sch_tbf"),
    "vlan": (("VLAN_8021Q",), "8021q"),
    "bridge_vlan_filtering": (("BRIDGE", "BRIDGE_VLAN_FILTERING"), "bridge"),
    "dummy": (("DUMMY",), "dummy"),
    "tun": (("TUN",), "tun"),
}
# The features tests may mark themselves with (@pytest.mark.kernel, tests/py/conftest.py).
KERNEL_FEATURES = tuple(_FEATURES)

# The witness for a kernel whose configuration cannot be read: iproute2 in a
# throwaway network namespace (unshare -n), which is gone with the command.
_PROBES = {
    "netem": "ip link set lo up && tc qdisc add dev lo root netem delay 1ms",
    "tbf": "ip link set lo up && tc qdisc add dev lo root tbf rate 1mbit burst 32kbit latency 50ms",
    "vlan": "ip link add d0 type dummy && ip link add link d0 name d0.10 type vlan id 10",
    "bridge_vlan_filtering": "ip link add br0 type bridge vlan_filtering 1 && "
                             "ip -d link show br0 | grep -q 'vlan_filtering 1'",
    "dummy": "ip link add d0 type dummy",
    "tun": "ip tuntap add dev tap0 mode tap",
}


def _kernel_config() -> dict[str, str] | None:
    text = None
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            text = f.read()
    except OSError:
        try:
            text = Path(f"/boot/config-{platform.release()}").read_text()
        except OSError:
            return None
    config = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            config[key[len("CONFIG_"):]] = value
    return config


def _module_available(module: str) -> bool:
    if Path("/sys/module", module).exists():
        return True
    try:
        dep = Path("/lib/modules", platform.release(), "modules.dep").read_text()
    except OSError:
        return False
    for line in dep.splitlines():
        name = line.split(":", 1)[0].rsplit("/", 1)[-1].split(".ko", 1)[0]
        if name.replace("-", "_") == module:
            return True
    return False


def _probe(feature: str) -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    proc = subprocess.run(["unshare", "--net", "sh", "-c", _PROBES[feature]],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    return proc.returncode == 0


def kernel_has(feature: str) -> bool:
    """Whether the running kernel has feature: one of netem, tbf, vlan,
    bridge_vlan_filtering, dummy, tun. Built in, or a module that is loaded or can be."""
    if feature not in _FEATURES:
        raise ValueError(f"unknown kernel feature {feature!r}; known: {', '.join(sorted(_FEATURES))}")
    symbols, module = _FEATURES[feature]
    config = _kernel_config()
    if config is not None:
        values = [config.get(s) for s in symbols]
        if any(v not in ("y", "m") for v in values):
            return False
        if all(v == "y" for v in values):
            return True
        return _module_available(module) or _probe(feature)
    if feature == "tun" and Path("/dev/net/tun").exists() and _module_available("tun"):
        return True
    return _probe(feature)
