"""Stopping `labctl up` at an observed point of its work instead of after a guessed time.

`stop_at(proc, name, n_hosts, point)` polls what the host shows of star lab NAME (its
journal, its namespaces in /run/netns, the ports of its switch `sw`, the address of its
last host, an exec command's marker) until POINT holds, then stops
the whole process with SIGSTOP and returns what the host shows while it is stopped: the
exact partial state a following SIGKILL (or signal) lands on. A test records that
state and asserts what it expects of it (e.g. that `up` had not finished).
"""
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass


def state_root():
    return os.environ.get("LABCTL_STATE_DIR") or "/run/labctl"


@dataclass
class Progress:
    events: list = None        # the journal's events (None: no journal yet)
    namespaces: int = 0        # the lab's entries in /run/netns
    switch_ports: int = 0      # bridge ports in <lab>-sw
    ports_carrier: int = 0     # of those, with carrier (operstate UP)
    last_host_addressed: bool = False  # h<n> has an IPv4 address
    exec_running: bool = False  # the marker of a star_with_exec command exists

    @property
    def complete(self):
        """The journal says `up` finished."""
        return bool(self.events) and "up" in self.events

    def __str__(self):
        return (f"journal {self.events}, {self.namespaces} namespaces, {self.switch_ports} switch "
                f"ports ({self.ports_carrier} with carrier), last host addressed: "
                f"{self.last_host_addressed}, exec running: {self.exec_running}")


def journal_events(name):
    try:
        with open(os.path.join(state_root(), name, "journal")) as f:
            text = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line)["event"])
        except (ValueError, KeyError, TypeError):
            pass  # a line being written
    return events


def lab_namespace_count(name):
    try:
        return sum(1 for n in os.listdir("/run/netns") if n.startswith(name + "-"))
    except FileNotFoundError:
        return 0


def _ip(ns, *args):
    r = subprocess.run(["ip", "-n", ns, "-j", *args], capture_output=True, text=True)
    return json.loads(r.stdout or "[]") if r.returncode == 0 else []


def every_namespace_recorded(events, n_namespaces):
    """The journal holds the identity of each of the lab's namespaces: one "netns" record
    per namespace (a journal of labctl before identities were journaled as each namespace
    was made had one "netns-created" record for all)."""
    return events is not None and ("netns-created" in events or events.count("netns") >= n_namespaces)


def progress(name, n_hosts, marker=None, deep=True):
    """What the host shows of `up` of star lab NAME; DEEP: also ask ip about the switch
    and the last host (only once the journal says every namespace exists)."""
    p = Progress(journal_events(name), lab_namespace_count(name))
    p.exec_running = marker is not None and os.path.exists(marker)
    if deep and every_namespace_recorded(p.events, n_hosts + 1):
        ports = [item for item in _ip(f"{name}-sw", "link", "show") if "master" in item]
        p.switch_ports = len(ports)
        p.ports_carrier = sum(1 for link in ports if link.get("operstate") == "UP")
        p.last_host_addressed = any(a.get("family") == "inet" for link in _ip(f"{name}-h{n_hosts}", "addr", "show")
                                    for a in link.get("addr_info", []))
    return p


def star_with_exec(doc, marker):
    """DOC (a labfix.star) with an exec command on h1 that, the first time, writes its
    PID to MARKER and holds `up` for 60 s as `sleep 60` (a later `up` finds the marker
    and goes on at once)."""
    doc["nodes"]["h1"]["exec"] = [["sh", "-c", f"[ -e {marker} ] || {{ echo $$ > {marker}.tmp; "
                                   f"mv {marker}.tmp {marker}; exec sleep 60; }}"]]
    return doc


def process_alive(pid, start_time):
    """PID is still the process that started at START_TIME and has not exited (a zombie
    waiting for its reaper has exited)."""
    return start_time is not None and _stat(pid)[:2] == (start_time, True)


def process_start_time(pid):
    return _stat(pid)[0]


def _stat(pid):
    """(start time, running: not a zombie) of PID; (None, False) when there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None, False
    return int(fields[19]), fields[0] not in ("Z", "X")


def exec_process(marker):
    """(pid, start time) of the star_with_exec command; (None, None) if it never started."""
    try:
        pid = int(open(marker).read())
    except (FileNotFoundError, ValueError):
        return None, None
    return pid, process_start_time(pid)


def release_exec(marker):
    """Makes the star_with_exec command of a later `up` go on at once."""
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write("released\n")


# Points of `up` of a star lab (n hosts on switch `sw`), in the order `up` reaches them:
# (description, predicate on Progress, needs the ip queries). The last needs star_with_exec.
def points_of_star(n_hosts):
    return [
        ("journal begun", lambda p: p.events is not None, False),
        ("first namespace", lambda p: p.namespaces >= 1, False),
        ("half the namespaces", lambda p: p.namespaces >= (n_hosts + 1) // 2, False),
        ("every namespace recorded", lambda p: every_namespace_recorded(p.events, n_hosts + 1), False),
        ("switch ports made", lambda p: p.switch_ports >= n_hosts, True),
        ("last host addressed", lambda p: p.last_host_addressed, True),
        ("every port with carrier", lambda p: p.ports_carrier >= n_hosts, True),
        ("exec command running", lambda p: p.exec_running, False),
    ]


def _wait_stopped(pid, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state in ("T", "t", "Z"):
            return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} did not stop")


def stop_at(proc, name, n_hosts, point, marker=None, timeout=120):
    """Polls until POINT (one of points_of_star(n_hosts)) holds for star lab NAME,
    SIGSTOPs PROC, and returns the Progress seen while it is stopped. Fails when `up`
    ends or completes before the point is reached."""
    what, holds, deep = point
    deadline = time.monotonic() + timeout
    while True:
        p = progress(name, n_hosts, marker, deep)
        if holds(p):
            break
        assert not p.complete, f"`up` finished before the point '{what}': {p}"
        assert proc.poll() is None, f"`up` exited ({proc.returncode}) before the point '{what}': {p}"
        assert time.monotonic() < deadline, f"the point '{what}' not reached in {timeout} s: {p}"
        time.sleep(0.001)
    proc.send_signal(signal.SIGSTOP)
    _wait_stopped(proc.pid)
    return progress(name, n_hosts, marker)


def kill_stopped(proc):
    """SIGKILL a (stopped) process and reap it; returns its exit status."""
    proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=30)
