"""Parametric topologies for the benchmark, in one neutral model, and the files each
tool needs to build them: a labctl topology, a shell script of one `ip` command per
operation, `ip -batch` files, and a plain description for the pyroute2 and Mininet
runners.

Addresses: 10.0.0.0/8 only, inside the lab's namespaces; the root namespace gets none.
"""

import ipaddress
import json


class Topo:
    def __init__(self, kind, n):
        self.kind = kind
        self.n = n
        # name -> {"kind": host|router|switch, "ifaces": {ifname: [prefix]}, "routes": [(to, via)]}
        self.nodes = {}
        self.links = []  # (a, ifa, b, ifb): a is the busier end (a switch port side)
        self.checks = []  # (from node, to node)

    def node(self, name, kind="host"):
        self.nodes[name] = {"kind": kind, "ifaces": {}, "routes": []}
        return self.nodes[name]

    def link(self, a, ifa, b, ifb, addr_a=None, addr_b=None):
        self.nodes[a]["ifaces"][ifa] = [addr_a] if addr_a else []
        self.nodes[b]["ifaces"][ifb] = [addr_b] if addr_b else []
        self.links.append((a, ifa, b, ifb))

    def first_address(self, name):
        for addrs in self.nodes[name]["ifaces"].values():
            for a in addrs:
                return a.split("/")[0]
        return None

    def neighbour_entries_all_pairs(self):
        """ARP entries an all-pairs ping needs at once (an upper bound): on a shared
        LAN every sender resolves every target; across routers, only the next hops."""
        if self.kind == "star":
            return self.n * (self.n - 1) * 2
        return 4 * len(self.links) + 2 * len(self.nodes)


def _sample_pairs(names, count, distance):
    n = len(names)
    out = []
    if n < 2:
        return out
    step = max(1, n // count)
    for k in range(0, n, step):
        j = k + distance if k + distance < n else k - distance
        if 0 <= j < n and j != k:
            out.append((names[k], names[j]))
        if len(out) >= count:
            break
    return out


def star(n):
    """N hosts h1..hN on one switch sw (a bridge); one /16."""
    t = Topo("star", n)
    t.node("sw", "switch")
    hosts = []
    for i in range(1, n + 1):
        h = "h%d" % i
        t.node(h)
        hosts.append(h)
        t.link("sw", "p%d" % i, h, "eth0", None, "10.1.%d.%d/16" % (i // 250, i % 250 + 1))
    t.checks = _sample_pairs(hosts, 10, max(1, n // 2))
    return t


def _prefixes_covering(lo, hi, base, size):
    """The CIDR prefixes covering link subnets lo..hi-1 (each of `size` addresses from
    `base`): O(log N) of them, so a chain's routes grow as N log N, not N^2."""
    first = int(base) + lo * size
    last = int(base) + hi * size - 1
    return [str(p) for p in ipaddress.summarize_address_range(ipaddress.IPv4Address(first),
                                                              ipaddress.IPv4Address(last))]


def chain(n):
    """N routers r1..rN in a line; link i (ri:eth1 - r(i+1):eth0) is 10.0.0.0 + 4i /30.
    Routes end to end: a default toward r1 and O(log N) aggregates toward rN."""
    t = Topo("chain", n)
    base = ipaddress.IPv4Address("10.0.0.0")
    for i in range(1, n + 1):
        t.node("r%d" % i, "router")
    for i in range(1, n):
        net = int(base) + 4 * i
        t.link("r%d" % i, "eth1", "r%d" % (i + 1), "eth0",
               "%s/30" % ipaddress.IPv4Address(net + 1), "%s/30" % ipaddress.IPv4Address(net + 2))
    for k in range(1, n + 1):
        routes = t.nodes["r%d" % k]["routes"]
        left = str(ipaddress.IPv4Address(int(base) + 4 * (k - 1) + 1)) if k > 1 else None
        right = str(ipaddress.IPv4Address(int(base) + 4 * k + 2)) if k < n else None
        if left:
            routes.append(("default", left))
        if right:
            # Links k+1 .. n-1 lie to the right (link k is connected).
            if k + 1 <= n - 1:
                for p in _prefixes_covering(k + 1, n, base, 4):
                    routes.append((p, right))
            if not left:
                routes[:] = [("default", right)]
    names = ["r%d" % i for i in range(1, n + 1)]
    # Pings carry TTL 64: pairs at most 50 routers apart.
    t.checks = _sample_pairs(names, 10, min(n // 2, 50))
    return t


def tree(n, fanout=20):
    """N hosts in LANs of `fanout` on switches s1..sK, each switch behind its gateway
    router g1..gK, the gateways on /30 links to one core router c."""
    t = Topo("tree", n)
    t.node("c", "router")
    k = max(1, (n + fanout - 1) // fanout)
    lanbase = int(ipaddress.IPv4Address("10.128.0.0"))
    hosts = []
    for j in range(1, k + 1):
        g, s = "g%d" % j, "s%d" % j
        t.node(g, "router")
        t.node(s, "switch")
        core_net = int(ipaddress.IPv4Address("10.0.0.0")) + 4 * j
        lan = lanbase + 256 * j
        t.link("c", "eth%d" % j, g, "eth0", "%s/30" % ipaddress.IPv4Address(core_net + 1),
               "%s/30" % ipaddress.IPv4Address(core_net + 2))
        t.link(s, "uplink", g, "eth1", None, "%s/24" % ipaddress.IPv4Address(lan + 1))
        t.nodes[g]["routes"].append(("default", str(ipaddress.IPv4Address(core_net + 1))))
        t.nodes["c"]["routes"].append(("%s/24" % ipaddress.IPv4Address(lan), str(ipaddress.IPv4Address(core_net + 2))))
        for m in range(1, fanout + 1):
            i = (j - 1) * fanout + m
            if i > n:
                break
            h = "h%d" % i
            t.node(h)
            hosts.append(h)
            t.link(s, "p%d" % m, h, "eth0", None, "%s/24" % ipaddress.IPv4Address(lan + 1 + m))
            t.nodes[h]["routes"].append(("default", str(ipaddress.IPv4Address(lan + 1))))
    t.checks = _sample_pairs(hosts, 10, max(1, n // 2))
    return t


def campus(n, ports=500):
    """N hosts on switches s1..sK of `ports` ports each, every switch on the core router c
    (c:eth<j> - s<j>:uplink); LAN j is 10.<j>.0.0/16 with c at .0.1, hosts' default route
    through it; 100 sampled host-to-host checks, most of them across the core."""
    t = Topo("campus", n)
    t.node("c", "router")
    k = max(1, (n + ports - 1) // ports)
    hosts = []
    for j in range(1, k + 1):
        s = "s%d" % j
        t.node(s, "switch")
        t.link(s, "uplink", "c", "eth%d" % j, None, "10.%d.0.1/16" % j)
        for m in range(1, ports + 1):
            i = (j - 1) * ports + m
            if i > n:
                break
            h = "h%d" % i
            t.node(h)
            hosts.append(h)
            t.link(s, "p%d" % m, h, "eth0", None, "10.%d.%d.%d/16" % (j, m // 250 + 1, m % 250 + 1))
            t.nodes[h]["routes"].append(("default", "10.%d.0.1" % j))
    t.checks = _sample_pairs(hosts, 100, max(1, n // 2))
    return t


GENERATORS = {"star": star, "chain": chain, "tree": tree, "campus": campus}


# --- emitters --------------------------------------------------------------------------

def labctl_json(t, lab):
    nodes = {}
    for name, nd in t.nodes.items():
        j = {"kind": nd["kind"]}
        ifaces = {i: {"addresses": a} for i, a in nd["ifaces"].items() if a}
        if ifaces:
            j["interfaces"] = ifaces
        if nd["routes"]:
            j["routes"] = [{"to": to, "via": via} for to, via in nd["routes"]]
        nodes[name] = j
    return {
        "name": lab,
        "nodes": nodes,
        "links": [{"endpoints": ["%s:%s" % (a, ia), "%s:%s" % (b, ib)]} for a, ia, b, ib in t.links],
        "checks": [{"from": f, "to": to} for f, to in t.checks],
    }


def ns_names(t, prefix):
    return ["%s-%s" % (prefix, name) for name in t.nodes]


def _ops(t, prefix):
    """The operations in order, as (namespace or None for the root, ip arguments)."""
    def ns(name):
        return "%s-%s" % (prefix, name)

    ops = []
    for name in t.nodes:
        ops.append((None, "netns add %s" % ns(name)))
    for name, nd in t.nodes.items():
        if nd["kind"] == "router":
            ops.append(("exec", "netns exec %s sysctl -qw net.ipv4.ip_forward=1" % ns(name)))
    for name, nd in t.nodes.items():
        ops.append((ns(name), "link set lo up"))
        if nd["kind"] == "switch":
            ops.append((ns(name), "link add br0 type bridge forward_delay 0 stp_state 0"))
            ops.append((ns(name), "link set br0 up"))
    for a, ia, b, ib in t.links:
        ops.append(("veth", (ns(a), ia, ns(b), ib)))
    for a, ia, b, ib in t.links:
        for node, ifname in ((a, ia), (b, ib)):
            master = " master br0" if t.nodes[node]["kind"] == "switch" else ""
            ops.append((ns(node), "link set %s%s up" % (ifname, master)))
    for name, nd in t.nodes.items():
        for ifname, addrs in nd["ifaces"].items():
            for p in addrs:
                ops.append((ns(name), "addr add %s dev %s" % (p, ifname)))
        for to, via in nd["routes"]:
            ops.append((ns(name), "route add %s via %s" % (to, via)))
    return ops


def ip_script(t, prefix):
    """(up, down) shell scripts: one `ip` process per operation."""
    up = ["#!/bin/sh", "set -e"]
    for where, op in _ops(t, prefix):
        if where is None or where == "exec":
            up.append("ip %s" % op)
        elif where == "veth":
            na, ia, nb, ib = op
            up.append("ip -n %s link add %s type veth peer name %s netns %s" % (na, ia, ib, nb))
        else:
            up.append("ip -n %s %s" % (where, op))
    down = ["#!/bin/sh"] + ["ip netns del %s" % n for n in ns_names(t, prefix)]
    return "\n".join(up) + "\n", "\n".join(down) + "\n"


def ip_batch(t, prefix, workdir):
    """(up, down) shell scripts around `ip -batch` files: one batch in the root namespace
    (namespaces, sysctls via `netns exec`, every veth pair born in its two namespaces),
    then one `ip -n NS -batch` per namespace (ip's batch mode takes no per-line -n)."""
    root, per_ns = [], {}
    for where, op in _ops(t, prefix):
        if where is None or where == "exec":
            root.append(op)
        elif where == "veth":
            na, ia, nb, ib = op
            root.append("link add %s netns %s type veth peer name %s netns %s" % (ia, na, ib, nb))
        else:
            per_ns.setdefault(where, []).append(op)
    files = {"root.batch": root}
    up = ["#!/bin/sh", "set -e", "ip -batch %s/root.batch" % workdir]
    for i, (ns, lines) in enumerate(per_ns.items()):
        files["ns%d.batch" % i] = lines
        up.append("ip -n %s -batch %s/ns%d.batch" % (ns, workdir, i))
    files["down.batch"] = ["netns del %s" % n for n in ns_names(t, prefix)]
    for name, lines in files.items():
        with open("%s/%s" % (workdir, name), "w") as f:
            f.write("\n".join(lines) + "\n")
    down = ["#!/bin/sh", "ip -batch %s/down.batch" % workdir]
    return "\n".join(up) + "\n", "\n".join(down) + "\n"


def ip_verify_script(t, prefix):
    """The checks as `ip netns exec ... ping`, all at once; each stops at its first reply."""
    lines = ["#!/bin/sh", "fail=0"]
    for f, to in t.checks:
        lines.append("ip netns exec %s-%s ping -q -n -c 1 -i 0.1 -w 1 %s >/dev/null 2>&1 &" %
                     (prefix, f, t.first_address(to)))
    lines.append("for p in $(jobs -p); do wait $p || fail=1; done")
    lines.append("exit $fail")
    return "\n".join(lines) + "\n"


def plain(t, prefix):
    """What the pyroute2 and Mininet runners read."""
    return {"kind": t.kind, "n": t.n, "prefix": prefix,
            "nodes": t.nodes, "links": t.links,
            "checks": [(f, to, t.first_address(to)) for f, to in t.checks]}


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
