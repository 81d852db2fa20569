"""The benchmark's topology built with pyroute2 (Debian python3-pyroute2), the way its
documentation shows: netns.create per namespace, an IPRoute opened inside each one
(netns.pushns/popns, no process per namespace), names looked up before use.

usage: alt_pyroute2.py SPEC.json up|down
"""
import json
import os
import sys

from pyroute2 import IPRoute, netns


def up(spec):
    p = spec["prefix"]
    nodes = spec["nodes"]

    def ns(n):
        return "%s-%s" % (p, n)

    for name in nodes:
        netns.create(ns(name))
    ipr, fds = {}, {}
    for name, nd in nodes.items():
        netns.pushns(ns(name))
        try:
            ipr[name] = IPRoute()
            if nd["kind"] == "router":
                with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                    f.write("1")
        finally:
            netns.popns()
        fds[name] = os.open("/run/netns/" + ns(name), os.O_RDONLY)
    for name, nd in nodes.items():
        r = ipr[name]
        r.link("set", index=1, state="up")
        if nd["kind"] == "switch":
            r.link("add", ifname="br0", kind="bridge", br_forward_delay=0, br_stp_state=0)
            r.link("set", index=r.link_lookup(ifname="br0")[0], state="up")
    for a, ia, b, ib in spec["links"]:
        ipr[a].link("add", ifname=ia, kind="veth", peer={"ifname": ib, "net_ns_fd": fds[b]})
    for a, ia, b, ib in spec["links"]:
        for node, ifname in ((a, ia), (b, ib)):
            r = ipr[node]
            idx = r.link_lookup(ifname=ifname)[0]
            if nodes[node]["kind"] == "switch":
                r.link("set", index=idx, master=r.link_lookup(ifname="br0")[0], state="up")
            else:
                r.link("set", index=idx, state="up")
    for name, nd in nodes.items():
        r = ipr[name]
        for ifname, addrs in nd["ifaces"].items():
            for pfx in addrs:
                addr, plen = pfx.split("/")
                r.addr("add", index=r.link_lookup(ifname=ifname)[0], address=addr, prefixlen=int(plen))
        for to, via in nd["routes"]:
            r.route("add", dst="0.0.0.0/0" if to == "default" else to, gateway=via)
    for r in ipr.values():
        r.close()
    for fd in fds.values():
        os.close(fd)


def down(spec):
    for name in spec["nodes"]:
        netns.remove("%s-%s" % (spec["prefix"], name))


if __name__ == "__main__":
    spec = json.load(open(sys.argv[1]))
    {"up": up, "down": down}[sys.argv[2]](spec)
