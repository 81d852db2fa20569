"""The benchmark's topology built with Mininet 2.3 (Debian package), Linux bridges and no
controller, in one process: up (build + start), verify (the same checks, one `ping` per
check from the node's shell, as net.ping does), down (net.stop()). Prints the three
wall times and the process's peak RSS as JSON.

Mininet's own host tuning (Mininet.init -> fixLimits raises gc_thresh, pty.max, ...) is
skipped: the benchmark never changes host settings. Its `mn -c` cleanup (kills by name
pattern) is never run; net.stop() removes what this process made.

usage: alt_mininet.py SPEC.json [--no-verify]
"""
import json
import resource
import sys
import time

from quiet import wait_cpu_idle

from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.nodelib import LinuxBridge


def main():
    spec = json.load(open(sys.argv[1]))
    verify = "--no-verify" not in sys.argv
    p = spec["prefix"]
    nodes = spec["nodes"]
    setLogLevel("error")
    Mininet.inited = True  # no fixLimits(): host settings stay as they are
    out = {}
    net = Mininet(switch=LinuxBridge, controller=None, build=False, autoSetMacs=False,
                  waitConnected=False)
    try:
        t0 = time.monotonic()
        mn = {}
        for name, nd in nodes.items():
            if nd["kind"] == "switch":
                mn[name] = net.addSwitch(p + name, dpid="%x" % (len(mn) + 1))
            else:
                mn[name] = net.addHost(p + name, ip=None)
        for a, ia, b, ib in spec["links"]:
            pa = {"ip": nodes[a]["ifaces"][ia][0]} if nodes[a]["ifaces"][ia] else {}
            pb = {"ip": nodes[b]["ifaces"][ib][0]} if nodes[b]["ifaces"][ib] else {}
            net.addLink(mn[a], mn[b], params1=pa, params2=pb)
        net.build()
        net.start()
        for name, nd in nodes.items():
            cmds = []
            if nd["kind"] == "router":
                cmds.append("sysctl -qw net.ipv4.ip_forward=1")
            for to, via in nd["routes"]:
                cmds.append("ip route add %s via %s" % (to, via))
            if cmds:
                mn[name].cmd("; ".join(cmds))
        out["up"] = time.monotonic() - t0
        if verify:
            t0 = time.monotonic()
            ok = 0
            for f, to, addr in spec["checks"]:
                mn[f].cmd("ping -q -n -c 1 -i 0.1 -w 1 %s >/dev/null 2>&1" % addr)
                ok += mn[f].cmd("echo $?").strip() == "0"
            out["verify"] = time.monotonic() - t0
            out["checks_ok"] = ok
            out["checks"] = len(spec["checks"])
    finally:
        if "up" in out:
            out["quiet_wait"] = wait_cpu_idle()  # as before every tool's down (quiet.py)
        t0 = time.monotonic()
        net.stop()
        out["down"] = time.monotonic() - t0
    out["rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(out))


if __name__ == "__main__":
    main()
