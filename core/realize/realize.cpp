#include "realize/realize.hpp"

#include <algorithm>
#include <optional>
#include <map>

#include "base/error.hpp"
#include "nl/nl.hpp"
#include "state/state.hpp"

namespace labctl::realize {

namespace {

using namespace topology;

rtnl::Netem to_netem(const Impairment& x) {
    rtnl::Netem n;
    n.delay_ms = x.delay_ms;
    n.jitter_ms = x.jitter_ms;
    n.loss_pct = x.loss_pct;
    n.duplicate_pct = x.duplicate_pct;
    n.reorder_pct = x.reorder_pct;
    n.rate_mbit = x.rate_mbit;
    return n;
}

bool is_port(const Node& node, const Interface& iface) {
    return iface.master.has_value() && node.interfaces[*iface.master].type == InterfaceType::bridge;
}

rtnl::LinkCommon common(const Interface& iface, int ifindex) {
    rtnl::LinkCommon c;
    c.name = iface.name;
    c.ifindex = ifindex;
    c.mac = iface.mac;
    c.mtu = iface.mtu;
    return c;
}

// Sends a namespace's batch; errors already name the node and object.
void send(rtnl::Handle& h, nl::Batch& batch) {
    if (!batch.empty()) batch.run_or_throw(h.socket());
}

// The end of a link whose namespace sends the veth request: the busier node, so that
// a star's veths all go out in the hub's one batch.
int main_end(const Link& link, const std::vector<std::size_t>& link_count) {
    return link_count[link.ends[1].node] > link_count[link.ends[0].node] ? 1 : 0;
}

}  // namespace

std::vector<rtnl::Feature> features_needed(const Topology& topo) {
    std::vector<rtnl::Feature> f;
    auto want = [&](rtnl::Feature x) {
        if (std::find(f.begin(), f.end(), x) == f.end()) f.push_back(x);
    };
    for (const auto& node : topo.nodes) {
        if (node.vlan_filtering) want(rtnl::Feature::bridge_vlan_filtering);
        for (const auto& iface : node.interfaces) {
            if (iface.type == InterfaceType::tap || iface.type == InterfaceType::tun) want(rtnl::Feature::tuntap);
            if (iface.type == InterfaceType::dummy) want(rtnl::Feature::dummy);
            if (iface.type == InterfaceType::vlan) want(rtnl::Feature::vlan_8021q);
        }
    }
    for (const auto& link : topo.links) {
        if (link.impair.needs_netem()) want(rtnl::Feature::netem);
        else if (link.impair.rate_mbit) want(rtnl::Feature::tbf);
    }
    return f;
}

void create_namespaces(const Topology& topo, state::Journal& journal, Realized& out) {
    std::vector<std::string> names;
    names.reserve(topo.nodes.size());
    for (const auto& node : topo.nodes) names.push_back(node.netns);
    // Each namespace's identity is in the journal before its name exists: `down` and
    // the rollback act on nothing else (state.hpp).
    auto record = [&](std::size_t i, const netns::NetnsIdentity& id) {
        journal.netns({names[i], id.dev, id.ino, id.cookie, id.file_dev, id.file_ino});
    };

    // Runs on a creating thread, inside namespace i, before anything else is in it;
    // several run at once, each touching only slot i.
    std::vector<std::optional<rtnl::Handle>> handles(topo.nodes.size());
    auto inside = [&](std::size_t i) {
        const Node& node = topo.nodes[i];
        try {
            handles[i] = rtnl::Handle::open_here();
            // New interfaces: no DAD on link-local addresses, no router solicitations
            // (on a bridge of hundreds of ports their multicast drops packets).
            rtnl::sysctl_write_here("net.ipv6.conf.default.accept_dad", "0");
            rtnl::sysctl_write_here("net.ipv6.conf.default.router_solicitations", "0");
            // ICMP errors are not rate-limited: a check's "Destination net unreachable"
            // must not turn into "No reply" because another check just got one.
            rtnl::sysctl_write_here("net.ipv4.icmp_ratemask", "0");
            rtnl::sysctl_write_here("net.ipv6.icmp.ratelimit", "0");
            if (node.kind == NodeKind::router) {
                // "all" also sets "default", so interfaces made later forward too.
                rtnl::sysctl_write_here("net.ipv4.ip_forward", "1");
                rtnl::sysctl_write_here("net.ipv6.conf.all.forwarding", "1");
            }
            for (const auto& iface : node.interfaces)
                if (iface.type == InterfaceType::tap || iface.type == InterfaceType::tun)
                    rtnl::tuntap_create_here(iface.name, iface.type == InterfaceType::tap, iface.owner, iface.group);
        } catch (const KernelError& e) {
            throw e.prefixed(node.name);
        }
    };
    out.namespaces = netns::create_many(names, inside, record);
    out.handles.clear();
    out.handles.reserve(handles.size());
    for (auto& h : handles) out.handles.push_back(std::move(*h));

    // Interface indexes: lo is 1; ours from kFirstIfindex, unique across the lab; TUN/TAP
    // as the kernel chose. Unique because the kernel's linkwatch treats an operstate
    // change as urgent only when a device's ifindex differs from its iflink (for a veth:
    // the peer's ifindex); two ends with the same index get their carrier change
    // delayed by up to a second (linkwatch's rate limit), and `up` waits for it.
    out.ifindex.assign(topo.nodes.size(), {});
    int next = kFirstIfindex;
    for (std::size_t n = 0; n < topo.nodes.size(); ++n) {
        const Node& node = topo.nodes[n];
        auto& idx = out.ifindex[n];
        idx.assign(node.interfaces.size(), 0);
        bool tuntap = false;
        for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
            auto t = node.interfaces[i].type;
            if (t == InterfaceType::loopback) idx[i] = 1;
            else if (t == InterfaceType::tap || t == InterfaceType::tun) tuntap = true;
            else idx[i] = next++;
        }
        if (tuntap) {
            for (const auto& info : rtnl::link_dump(out.handles[n])) {
                auto i = node.find_interface(info.name);
                if (i && idx[*i] == 0) idx[*i] = info.ifindex;
            }
        }
    }
}

void configure(const Topology& topo, Realized& r) {
    const std::size_t n_nodes = topo.nodes.size();

    // Phase 2: bridges and dummies; lo up. A node without either gets lo up in its
    // phase 4 batch instead: one round trip per namespace fewer (star 1000: 1000).
    auto makes_devices = [](const Node& node) {
        return std::any_of(node.interfaces.begin(), node.interfaces.end(), [](const Interface& i) {
            return i.type == InterfaceType::bridge || i.type == InterfaceType::dummy;
        });
    };
    auto lo_up = [](nl::Batch& batch, const Node& node) {
        rtnl::LinkChange up;
        up.up = true;
        batch.add(rtnl::link_set(1, up), node.name + ": setting lo up");
    };
    for (std::size_t n = 0; n < n_nodes; ++n) {
        const Node& node = topo.nodes[n];
        if (!makes_devices(node)) continue;
        nl::Batch batch;
        lo_up(batch, node);
        for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
            const Interface& iface = node.interfaces[i];
            auto c = common(iface, r.ifindex[n][i]);
            c.up = iface.up;
            if (iface.type == InterfaceType::bridge) {
                // Snooping off until the ports are up (finish_bridges): with it on, every
                // port coming up re-enables multicast on every port of the bridge
                // (br_port_state_selection), O(ports^2) timer work; star 1000's configure
                // took 2.4-2.6 s with it, 1.8-2.0 s without (bench/observations.md).
                batch.add(rtnl::bridge_add(c, node.vlan_filtering && node.kind == NodeKind::switch_,
                                           /*multicast_snooping=*/false),
                          node.name + ": creating bridge " + iface.name);
            } else if (iface.type == InterfaceType::dummy) {
                c.up = false;  // enslaved (if a port) and brought up in phase 4
                batch.add(rtnl::dummy_add(c), node.name + ": creating dummy " + iface.name);
            }
        }
        send(r.handles[n], batch);
    }

    // Phase 3: veth pairs, one batch per sending namespace.
    std::vector<std::size_t> link_count(n_nodes, 0);
    for (const auto& link : topo.links) {
        ++link_count[link.ends[0].node];
        ++link_count[link.ends[1].node];
    }
    std::vector<nl::Batch> veths(n_nodes);
    for (const auto& link : topo.links) {
        int m = main_end(link, link_count);
        const LinkEnd& a = link.ends[m];
        const LinkEnd& b = link.ends[1 - m];
        const Node& na = topo.nodes[a.node];
        const Interface& ia = topo.interface(a);
        rtnl::VethSpec spec;
        spec.a = common(ia, r.ifindex[a.node][a.interface]);
        spec.a.up = ia.up && !link.impair.any();
        if (is_port(na, ia)) spec.a.master_ifindex = r.ifindex[a.node][*ia.master];
        spec.a_netns_fd = -1;  // the sending socket's own namespace
        spec.b = common(topo.interface(b), r.ifindex[b.node][b.interface]);
        spec.b_netns_fd = r.namespaces[b.node].fd.get();
        veths[a.node].add(rtnl::veth_add(spec),
                          na.name + ": creating veth " + topo.end_name(a) + " <-> " + topo.end_name(b));
    }
    for (std::size_t n = 0; n < n_nodes; ++n) send(r.handles[n], veths[n]);

    // Which veth ends were created up and enslaved already (the main ends).
    std::vector<std::vector<bool>> done(n_nodes);
    for (std::size_t n = 0; n < n_nodes; ++n) done[n].assign(topo.nodes[n].interfaces.size(), false);
    for (const auto& link : topo.links) {
        const LinkEnd& a = link.ends[main_end(link, link_count)];
        if (!link.impair.any()) done[a.node][a.interface] = true;
    }

    // Phase 4: the rest, per namespace.
    for (std::size_t n = 0; n < n_nodes; ++n) {
        const Node& node = topo.nodes[n];
        const auto& idx = r.ifindex[n];
        nl::Batch links;
        if (!makes_devices(node)) lo_up(links, node);
        // Qdiscs go on before the link comes up (the main end of an impaired link was
        // created down for that reason): no packet leaves unimpaired.
        for (const auto& link : topo.links)
            for (const auto& end : link.ends)
                if (end.node == n && link.impair.any())
                    links.add(rtnl::netem_add(idx[end.interface], to_netem(link.impair)),
                              node.name + ": adding " + rtnl::impairment_qdisc_kind(to_netem(link.impair)) +
                                  " qdisc on " + node.interfaces[end.interface].name);
        for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
            const Interface& iface = node.interfaces[i];
            bool settable = iface.type == InterfaceType::veth || iface.type == InterfaceType::tap ||
                            iface.type == InterfaceType::tun || iface.type == InterfaceType::dummy;
            if (!settable || done[n][i]) continue;
            rtnl::LinkChange change;
            if (is_port(node, iface)) change.master_ifindex = idx[*iface.master];
            if ((iface.type == InterfaceType::tap || iface.type == InterfaceType::tun) && iface.mtu)
                change.mtu = iface.mtu;
            if ((iface.type == InterfaceType::tap) && iface.mac) change.mac = iface.mac;
            if (iface.up) change.up = true;
            if (!change.up && !change.master_ifindex && !change.mtu && !change.mac) continue;
            links.add(rtnl::link_set(idx[i], change), node.name + ": setting up " + iface.name);
        }
        // vlans after their parents are up: a vlan created up on a down parent is ENETDOWN.
        for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
            const Interface& iface = node.interfaces[i];
            if (iface.type != InterfaceType::vlan) continue;
            auto c = common(iface, idx[i]);
            c.up = iface.up && node.interfaces[iface.parent].up;
            if (is_port(node, iface)) c.master_ifindex = idx[*iface.master];
            links.add(rtnl::vlan_add(c, idx[iface.parent], iface.vlan_id),
                      node.name + ": creating vlan " + iface.name + " on " + node.interfaces[iface.parent].name);
        }
        // Bridge VLANs: a port's default VLAN 1 makes way for its pvid and tagged VLANs.
        if (node.kind == NodeKind::switch_ && node.vlan_filtering) {
            for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
                const Interface& iface = node.interfaces[i];
                if (!is_port(node, iface) || (!iface.pvid && iface.tagged.empty())) continue;
                std::string what = node.name + ": VLANs of port " + iface.name;
                links.add(rtnl::bridge_vlan_del(idx[i], 1), what);
                if (iface.pvid) links.add(rtnl::bridge_vlan_add(idx[i], *iface.pvid, true, true), what);
                for (auto vid : iface.tagged) links.add(rtnl::bridge_vlan_add(idx[i], vid, false, false), what);
            }
        }
        // Without sysctls to write in between, one batch (one round trip) does it all:
        // the requests of a batch are processed in order.
        nl::Batch later;
        nl::Batch& addrs = node.sysctls.empty() ? links : later;
        for (std::size_t i = 0; i < node.interfaces.size(); ++i)
            for (const auto& p : node.interfaces[i].addresses)
                addrs.add(rtnl::addr_add(idx[i], p, true),
                          node.name + ": adding " + p.to_string() + " to " + node.interfaces[i].name);
        for (const auto& route : node.routes) {
            rtnl::RouteSpec spec;
            spec.dst = route.to;
            spec.family = route.family;
            spec.via = route.via;
            spec.oif = route.dev ? idx[*route.dev] : 0;
            spec.metric = route.metric;
            addrs.add(rtnl::route_add(spec), node.name + ": adding route " + route.to_string(node));
        }
        send(r.handles[n], links);
        if (!node.sysctls.empty()) {
            netns::run_in(r.namespaces[n], [&] {
                for (const auto& [key, value] : node.sysctls) {
                    try {
                        rtnl::sysctl_write_here(key, value);
                    } catch (const KernelError& e) {
                        throw e.prefixed(node.name);
                    }
                }
            });
            send(r.handles[n], later);
        }
    }
}

void wait_links(const Topology& topo, Realized& r, std::chrono::milliseconds timeout) {
    std::vector<rtnl::OperstateWait> waits;
    std::vector<std::size_t> node_of;
    for (std::size_t n = 0; n < topo.nodes.size(); ++n) {
        const Node& node = topo.nodes[n];
        std::vector<int> want;
        for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
            const Interface& iface = node.interfaces[i];
            if (iface.type != InterfaceType::veth || !iface.up || !iface.link) continue;
            // A link is up when both ends are.
            const Link& link = topo.links[*iface.link];
            const LinkEnd& other = link.ends[1 - iface.link_end];
            if (topo.interface(other).up) want.push_back(r.ifindex[n][i]);
        }
        if (want.empty()) continue;
        waits.push_back({&r.handles[n], std::move(want)});
        node_of.push_back(n);
    }
    if (waits.empty()) return;
    std::vector<std::vector<int>> left;
    try {
        left = rtnl::wait_operstate_up_many(waits, timeout);
    } catch (const KernelError& e) {
        throw e.prefixed("waiting for links to come up");
    }
    for (std::size_t w = 0; w < waits.size(); ++w) {
        if (left[w].empty()) continue;
        std::string list;
        for (int i : left[w]) list += (list.empty() ? "" : ", ") + std::to_string(i);
        throw KernelError(ETIMEDOUT, "waiting for links to come up",
                          "still not operationally up after " + std::to_string(timeout.count()) +
                              " ms: ifindex " + list)
            .prefixed(topo.nodes[node_of[w]].name);
    }
}

void finish_bridges(const Topology& topo, Realized& r) {
    for (std::size_t n = 0; n < topo.nodes.size(); ++n) {
        const Node& node = topo.nodes[n];
        nl::Batch batch;
        for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
            if (node.interfaces[i].type != InterfaceType::bridge) continue;
            batch.add(rtnl::bridge_set_multicast_snooping(r.ifindex[n][i], true),
                      node.name + ": turning on multicast snooping on " + node.interfaces[i].name);
        }
        send(r.handles[n], batch);
    }
}

}  // namespace labctl::realize
