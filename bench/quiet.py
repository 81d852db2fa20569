"""Waiting for the machine to go quiet before a measured `down`.

Right after a large lab comes up, the kernel keeps both CPUs busy for seconds with
the lab's IPv6 multicast (every host's MLD reports, flooded by a bridge that has no
querier to every port): measured at star 1000, 4 s after `up` returned, 99.8% of all
CPU samples were that storm. A `down` then waits on RCU grace periods slowed by it
(labctl's star-1000 down: 1.8-1.95 s right after up, 0.68-0.75 s 10 s later). A tool
whose `up` is slow finds the storm over; one whose `up` is fast does not. So before
every tool's `down` the harness waits for the CPUs to be mostly idle again.
"""
import time


def _cpu_times():
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    values = [int(x) for x in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values[:8]), idle


def wait_cpu_idle(min_idle=0.6, window=0.5, timeout=20.0):
    """Returns once the CPUs were at least `min_idle` idle over one `window`, or after
    `timeout` seconds (a machine busy with other work never gets there). Returns the
    seconds waited."""
    start = time.monotonic()
    try:
        total0, idle0 = _cpu_times()
        while time.monotonic() - start < timeout:
            time.sleep(window)
            total1, idle1 = _cpu_times()
            if total1 > total0 and (idle1 - idle0) / (total1 - total0) >= min_idle:
                break
            total0, idle0 = total1, idle1
    except (OSError, ValueError, IndexError):
        pass
    return time.monotonic() - start
