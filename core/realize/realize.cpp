#include "realize/realize.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <list>
#include <map>
#include <optional>

#include "base/error.hpp"
#include "base/timing.hpp"
#include "nl/nl.hpp"
#include "state/state.hpp"

namespace labctl::realize {

namespace {

using namespace topology;
using plan::Op;
using plan::OpKind;
using plan::Stage;

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

rtnl::LinkCommon common(const Interface& iface, int ifindex) {
    rtnl::LinkCommon c;
    c.name = iface.name;
    c.ifindex = ifindex;
    c.mac = iface.mac;
    c.mtu = iface.mtu;
    return c;
}

rtnl::RouteSpec to_rtnl(const plan::RouteSpec& r) {
    rtnl::RouteSpec s;
    s.dst = r.dst;
    s.family = r.family;
    s.via = r.via;
    s.oif = r.oif;
    s.metric = r.metric;
    return s;
}

// Errors a removal may meet when the kernel removed the object first (with its
// interface, its address, or its namespace): the goal is reached.
bool done_already(const Op& op, int err) {
    switch (op.kind) {
        case OpKind::add_route: return op.may_exist && err == EEXIST;
        case OpKind::delete_link: return err == ENODEV;
        case OpKind::delete_address: return err == EADDRNOTAVAIL || err == ENODEV;
        case OpKind::delete_route: return err == ESRCH || err == ENODEV;
        case OpKind::delete_qdisc: return err == ENOENT || err == EINVAL || err == ENODEV;
        default: return false;
    }
}

// The most namespaces one veth batch pins (its peers' ends go there by fd).
constexpr std::size_t kPeersPerBatch = 128;

// The namespace fds and netlink sockets the executor holds: at most kHeldNodes nodes'
// worth, plus what one operation in progress pins (a bridge's veth batch pins its
// peers' namespaces until sent), so a lab of any size is built within a fixed number of
// fds. The least recently used node unpinned is closed first; a node closed is opened
// again by name, and must be the namespace first seen (created by this plan or opened
// before): never another one put there meanwhile.
class Held {
public:
    static constexpr std::size_t kHeldNodes = 256;

    Held(const Topology& d, std::size_t capacity) : d_(d), capacity_(capacity), slots_(d.nodes.size()) {}

    const netns::NetnsHandle& ns(std::size_t n) {
        Slot& s = slots_[n];
        if (!s.ns) {
            auto h = netns::open(d_.nodes[n].netns);
            check_same(n, h);
            s.ns = std::move(h);
            ++held_;
        }
        use(n);
        return *s.ns;
    }

    // The node's netlink socket (open_handles() opens many at once more cheaply).
    rtnl::Handle& handle(std::size_t n) {
        Slot& s = slots_[n];
        if (!s.handle) s.handle = rtnl::Handle::open_in(ns(n));
        use(n);
        return *s.handle;
    }

    // Opens the sockets of `nodes` that have none, from one thread entering each
    // namespace in turn; all of `nodes` stay pinned until unpin().
    void open_handles(const std::vector<std::size_t>& nodes) {
        std::vector<std::size_t> want;
        for (std::size_t n : nodes) {
            ns(n);
            if (!slots_[n].handle) want.push_back(n);
        }
        if (want.empty()) return;
        std::vector<const netns::NetnsHandle*> list;
        for (std::size_t n : want) list.push_back(&*slots_[n].ns);
        auto hs = rtnl::Handle::open_in_each(list);
        for (std::size_t k = 0; k < want.size(); ++k) slots_[want[k]].handle = std::move(hs[k]);
    }

    // A namespace just created, with the socket opened inside it.
    void adopt(std::size_t n, netns::NetnsHandle ns, std::optional<rtnl::Handle> handle) {
        Slot& s = slots_[n];
        check_same(n, ns);
        if (!s.ns) ++held_;
        s.ns = std::move(ns);
        s.handle = std::move(handle);
        use(n);
    }

    // What was used so far may be closed again (oldest first) to make room.
    void unpin() {
        pinned_from_ = ++clock_;
        shrink(capacity_);
    }

    // Closes what is not pinned, oldest first, until `count` more fit.
    void make_room(std::size_t count) { shrink(count >= capacity_ ? 0 : capacity_ - count); }

private:
    struct Slot {
        std::optional<netns::NetnsHandle> ns;
        std::optional<rtnl::Handle> handle;
        bool seen = false;  // dev/ino below are the namespace's identity
        dev_t dev = 0;
        ino_t ino = 0;
        std::uint64_t used = 0;
        bool listed = false;
        std::list<std::size_t>::iterator pos;
    };

    void check_same(std::size_t n, const netns::NetnsHandle& h) {
        Slot& s = slots_[n];
        if (!s.seen) {
            s.seen = true;
            s.dev = h.dev;
            s.ino = h.ino;
        } else if (s.dev != h.dev || s.ino != h.ino) {
            throw LabError(d_.nodes[n].name + ": namespace " + d_.nodes[n].netns +
                               " was replaced by another while the lab was being built; left alone",
                           ESTALE);
        }
    }

    void use(std::size_t n) {
        Slot& s = slots_[n];
        s.used = ++clock_;
        if (s.listed) order_.splice(order_.end(), order_, s.pos);
        else {
            s.pos = order_.insert(order_.end(), n);
            s.listed = true;
        }
        shrink(capacity_);
    }

    // Closes the least recently used unpinned nodes while more than `keep` are held.
    void shrink(std::size_t keep) {
        while (held_ > keep && !order_.empty()) {
            Slot& s = slots_[order_.front()];
            if (s.used >= pinned_from_) return;  // the oldest is pinned: so is every other
            s.handle.reset();
            s.ns.reset();
            s.listed = false;
            order_.pop_front();
            --held_;
        }
    }

    const Topology& d_;
    const std::size_t capacity_;
    std::vector<Slot> slots_;
    std::list<std::size_t> order_;  // held nodes, least recently used first
    std::size_t held_ = 0;
    std::uint64_t clock_ = 0;
    std::uint64_t pinned_from_ = 0;  // used at or after this: pinned
};

class Executor {
public:
    Executor(const Topology& d, const plan::Plan& p, state::Journal& j, const Hooks& h, const Options& o)
        : d_(d), p_(p), journal_(j), hooks_(h), opt_(o), held_(d, Held::kHeldNodes) {}

    void run() {
        const bool timings = timings_wanted();
        std::size_t i = 0;
        bool first = true;
        while (i < p_.ops.size()) {
            Stage stage = plan::stage_of(p_.ops[i].kind);
            std::size_t end = i;
            while (end < p_.ops.size() && plan::stage_of(p_.ops[end].kind) == stage) ++end;
            if (!first && opt_.cancel && opt_.cancel->load())
                throw LabError("interrupted before " + std::string(stage_name(stage)), EINTR);
            first = false;
            const auto start = std::chrono::steady_clock::now();
            run_stage(stage, i, end);
            if (timings)
                report_timing(stage_name(stage),
                              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
            i = end;
        }
    }

private:
    static const char* stage_name(Stage s) {
        switch (s) {
            case Stage::stop: return "stopping processes";
            case Stage::remove: return "removing what the plan removes";
            case Stage::namespaces: return "creating namespaces";
            case Stage::devices: return "creating bridges and dummies";
            case Stage::veths: return "creating veth pairs";
            case Stage::configure: return "configuring links, addresses and routes";
            case Stage::wait: return "waiting for links";
            case Stage::exec: return "running exec commands";
            case Stage::daemons: return "starting daemons";
        }
        return "?";
    }

    void run_stage(Stage stage, std::size_t b, std::size_t e) {
        switch (stage) {
            case Stage::stop:
                for (std::size_t i = b; i < e; ++i) hooks_.stop_processes(p_.ops[i].name, p_.ops[i].all_processes);
                return;
            case Stage::namespaces: create_namespaces(b, e); return;
            case Stage::wait: wait(b, e); return;
            case Stage::exec:
            case Stage::daemons:
                for (std::size_t i = b; i < e; ++i) {
                    const Op& op = p_.ops[i];
                    int fd = held_.ns(op.node).fd.get();
                    if (op.kind == OpKind::run_exec) hooks_.run_exec(op.node, fd);
                    else hooks_.start_daemons(op.node, fd);
                    held_.unpin();
                }
                return;
            case Stage::remove: {
                std::vector<std::string> names;
                for (std::size_t i = b; i < e; ++i)
                    if (p_.ops[i].kind == OpKind::delete_netns) names.push_back(p_.ops[i].name);
                if (!names.empty()) hooks_.remove_namespaces(names);
                batches(b, e);
                return;
            }
            default: batches(b, e); return;
        }
    }

    // In chunks of what Held keeps open: each chunk's namespaces and sockets are handed
    // to it, which closes the oldest.
    void create_namespaces(std::size_t b, std::size_t e) {
        for (std::size_t first = b; first < e; first += Held::kHeldNodes)
            create_chunk(first, std::min(e, first + Held::kHeldNodes));
    }

    void create_chunk(std::size_t b, std::size_t e) {
        held_.make_room(e - b);
        std::vector<std::size_t> nodes;
        std::vector<std::string> names;
        for (std::size_t i = b; i < e; ++i) {
            nodes.push_back(p_.ops[i].node);
            names.push_back(d_.nodes[p_.ops[i].node].netns);
        }
        // Each namespace's identity is in the journal before its name exists: `down`, the
        // rollback and apply act on nothing else (state.hpp).
        auto record = [&](std::size_t k, const netns::NetnsIdentity& id) {
            journal_.netns({names[k], id.dev, id.ino, id.cookie, id.file_dev, id.file_ino});
        };
        // Runs on a creating thread, inside namespace k, before anything else is in it;
        // several run at once, each touching only slot k.
        std::vector<std::optional<rtnl::Handle>> handles(nodes.size());
        auto inside = [&](std::size_t k) {
            const std::size_t n = nodes[k];
            const Node& node = d_.nodes[n];
            // One per creating thread, kept across the namespaces it makes.
            thread_local rtnl::SysctlWriter sysctls;
            try {
                handles[k] = rtnl::Handle::open_here();
                // New interfaces: no DAD on link-local addresses, no router solicitations
                // (on a bridge of hundreds of ports their multicast drops packets).
                sysctls.write("net.ipv6.conf.default.accept_dad", "0");
                sysctls.write("net.ipv6.conf.default.router_solicitations", "0");
                // ICMP errors are not rate-limited: a check's "Destination net unreachable"
                // must not turn into "No reply" because another check just got one.
                sysctls.write("net.ipv4.icmp_ratemask", "0");
                sysctls.write("net.ipv6.icmp.ratelimit", "0");
                if (node.kind == NodeKind::router) {
                    // "all" also sets "default", so interfaces made later forward too.
                    sysctls.write("net.ipv4.ip_forward", "1");
                    sysctls.write("net.ipv6.conf.all.forwarding", "1");
                }
                for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
                    const Interface& iface = node.interfaces[i];
                    if (iface.type == InterfaceType::tap || iface.type == InterfaceType::tun)
                        rtnl::tuntap_create_here(iface.name, iface.type == InterfaceType::tap, iface.owner, iface.group,
                                                 p_.ifindex[n][i]);
                }
            } catch (const KernelError& err) {
                throw err.prefixed(node.name);
            }
        };
        auto made = netns::create_many(names, inside, record);
        for (std::size_t k = 0; k < nodes.size(); ++k) held_.adopt(nodes[k], std::move(made[k]), std::move(handles[k]));
        held_.unpin();
    }

    // The netlink operations of [b, e), one batch per node in the order planned;
    // write_sysctls sends what came before it, writes, and goes on.
    // Nodes are taken in chunks of what Held keeps open: their sockets are opened
    // together (one thread entering each namespace), then their batches sent.
    void batches(std::size_t b, std::size_t e) {
        std::vector<std::vector<std::size_t>> per_node(d_.nodes.size());
        std::vector<std::size_t> order;
        for (std::size_t i = b; i < e; ++i) {
            const Op& op = p_.ops[i];
            if (op.kind == OpKind::delete_netns) continue;
            if (per_node[op.node].empty()) order.push_back(op.node);
            per_node[op.node].push_back(i);
        }
        for (std::size_t first = 0; first < order.size(); first += Held::kHeldNodes) {
            const std::vector<std::size_t> chunk(
                order.begin() + static_cast<long>(first),
                order.begin() + static_cast<long>(std::min(order.size(), first + Held::kHeldNodes)));
            held_.open_handles(chunk);
            for (std::size_t n : chunk) batch_of(n, per_node[n]);
            held_.unpin();
        }
    }

    // One node's operations, one batch (split where sysctls are written, and where the
    // namespaces its veths' peers go to would pin more than kPeersPerBatch fds).
    void batch_of(std::size_t n, const std::vector<std::size_t>& ops) {
        nl::Batch batch;
        std::vector<const Op*> kinds;
        std::size_t peers = 0;
        for (std::size_t i : ops) {
            const Op& op = p_.ops[i];
            if (op.kind == OpKind::write_sysctls) {
                send(n, batch, kinds);
                write_sysctls(n);
                continue;
            }
            if (op.kind == OpKind::add_veth && ++peers > kPeersPerBatch) {
                send(n, batch, kinds);
                held_.unpin();
                held_.handle(n);  // pinned again: its socket sends the rest
                peers = 1;
            }
            std::size_t before = batch.size();
            add(batch, i);
            for (std::size_t k = before; k < batch.size(); ++k) kinds.push_back(&op);
        }
        send(n, batch, kinds);
    }

    void send(std::size_t n, nl::Batch& batch, std::vector<const Op*>& ops) {
        if (batch.empty()) return;
        auto results = batch.run(held_.handle(n).socket());
        for (std::size_t k = 0; k < results.size(); ++k) {
            const auto& r = results[k];
            if (r.error == 0 || done_already(*ops[k], r.error)) continue;
            throw KernelError(r.error, r.context, r.kernel_message);
        }
        batch.clear();
        ops.clear();
    }

    void write_sysctls(std::size_t n) {
        const Node& node = d_.nodes[n];
        netns::run_in(held_.ns(n), [&] {
            for (const auto& [key, value] : node.sysctls) {
                try {
                    rtnl::sysctl_write_here(key, value);
                } catch (const KernelError& err) {
                    throw err.prefixed(node.name);
                }
            }
        });
    }

    void add(nl::Batch& batch, std::size_t i) {
        const Op& op = p_.ops[i];
        const Node& node = d_.nodes[op.node];
        const auto& idx = p_.ifindex[op.node];
        std::string what = p_.describe(d_, i);
        switch (op.kind) {
            case OpKind::delete_link: batch.add(rtnl::link_del(op.ifindex), what); return;
            case OpKind::delete_address: batch.add(rtnl::addr_del(op.ifindex, op.prefix), what); return;
            case OpKind::delete_route: batch.add(rtnl::route_del(to_rtnl(op.route)), what); return;
            case OpKind::delete_qdisc: batch.add(rtnl::qdisc_del_root(op.ifindex), what); return;
            case OpKind::add_bridge: {
                auto c = common(node.interfaces[op.iface], op.ifindex);
                c.up = op.up.value_or(false);
                // Snooping off until the ports are up (finish_bridges): with it on, every
                // port coming up re-enables multicast on every port of the bridge
                // (br_port_state_selection), O(ports^2) timer work; star 1000's configure
                // took 2.4-2.6 s with it, 1.8-2.0 s without (bench/observations.md).
                batch.add(rtnl::bridge_add(c, node.vlan_filtering && node.kind == NodeKind::switch_,
                                           /*multicast_snooping=*/false),
                          what);
                return;
            }
            case OpKind::add_dummy: {
                auto c = common(node.interfaces[op.iface], op.ifindex);
                c.up = false;  // enslaved (if a port) and brought up in the configure stage
                batch.add(rtnl::dummy_add(c), what);
                return;
            }
            case OpKind::add_veth: {
                const Link& link = d_.links[op.link];
                const LinkEnd& a =
                    link.ends[0].node == op.node && link.ends[0].interface == op.iface ? link.ends[0] : link.ends[1];
                const LinkEnd& bend = &a == &link.ends[0] ? link.ends[1] : link.ends[0];
                rtnl::VethSpec spec;
                spec.a = common(d_.interface(a), op.ifindex);
                spec.a.up = op.up.value_or(false);
                spec.a.master_ifindex = op.master.value_or(0);
                spec.a_netns_fd = -1;  // the sending socket's own namespace
                spec.b = common(d_.interface(bend), p_.ifindex[bend.node][bend.interface]);
                spec.b_netns_fd = held_.ns(bend.node).fd.get();
                batch.add(rtnl::veth_add(spec), what);
                return;
            }
            case OpKind::set_link: {
                const Interface& iface = node.interfaces[op.iface];
                rtnl::LinkChange change;
                change.up = op.up;
                change.mtu = op.mtu;
                change.master_ifindex = op.master;
                if (iface.type == InterfaceType::tap && iface.mac && p_.created[op.node]) change.mac = iface.mac;
                batch.add(rtnl::link_set(op.ifindex, change), what);
                return;
            }
            case OpKind::add_vlan: {
                const Interface& iface = node.interfaces[op.iface];
                auto c = common(iface, op.ifindex);
                c.up = op.up.value_or(false);
                c.master_ifindex = op.master.value_or(0);
                batch.add(rtnl::vlan_add(c, idx[iface.parent], iface.vlan_id),
                          what + " on " + node.interfaces[iface.parent].name);
                return;
            }
            case OpKind::bridge_vlans: {
                // A port's default VLAN 1 makes way for its pvid and tagged VLANs.
                const Interface& iface = node.interfaces[op.iface];
                batch.add(rtnl::bridge_vlan_del(op.ifindex, 1), what);
                if (iface.pvid) batch.add(rtnl::bridge_vlan_add(op.ifindex, *iface.pvid, true, true), what);
                for (auto vid : iface.tagged) batch.add(rtnl::bridge_vlan_add(op.ifindex, vid, false, false), what);
                return;
            }
            case OpKind::replace_qdisc: {
                auto netem = to_netem(op.impair);
                // A qdisc already there (a changed impairment) is replaced in the same request.
                batch.add(rtnl::netem_add(op.ifindex, netem, !p_.created[op.node]),
                          node.name + ": adding " + rtnl::impairment_qdisc_kind(netem) + " qdisc on " +
                              node.interfaces[op.iface].name);
                return;
            }
            case OpKind::add_address: batch.add(rtnl::addr_add(op.ifindex, op.prefix, true), what); return;
            case OpKind::add_route: batch.add(rtnl::route_add(to_rtnl(op.route)), what); return;
            case OpKind::finish_bridges: batch.add(rtnl::bridge_set_multicast_snooping(op.ifindex, true), what); return;
            default: return;
        }
    }

    // The nodes of each wait_links, in chunks of what Held keeps open, against one
    // deadline: links come up on their own meanwhile, so a chunk waited for later has
    // mostly nothing left to wait for.
    void wait(std::size_t b, std::size_t e) {
        const auto deadline = std::chrono::steady_clock::now() + opt_.link_timeout;
        for (std::size_t i = b; i < e; ++i) {
            const Op& op = p_.ops[i];
            if (op.kind != OpKind::wait_links) continue;
            std::vector<std::size_t> nodes;
            std::vector<std::vector<int>> ifindexes;
            std::map<std::size_t, std::size_t> slot;
            for (const auto& [n, idx] : op.wait) {
                auto [it, fresh] = slot.emplace(n, nodes.size());
                if (fresh) {
                    nodes.push_back(n);
                    ifindexes.emplace_back();
                }
                ifindexes[it->second].push_back(idx);
            }
            for (std::size_t first = 0; first < nodes.size(); first += Held::kHeldNodes) {
                const std::size_t last = std::min(nodes.size(), first + Held::kHeldNodes);
                wait_chunk({nodes.begin() + static_cast<long>(first), nodes.begin() + static_cast<long>(last)},
                           {ifindexes.begin() + static_cast<long>(first), ifindexes.begin() + static_cast<long>(last)},
                           deadline);
                held_.unpin();
            }
        }
        // Then the bridges' multicast snooping, back on now that their ports are up.
        std::size_t first = b;
        while (first < e && p_.ops[first].kind == OpKind::wait_links) ++first;
        batches(first, e);
    }

    void wait_chunk(const std::vector<std::size_t>& nodes, std::vector<std::vector<int>> ifindexes,
                    std::chrono::steady_clock::time_point deadline) {
        held_.open_handles(nodes);
        std::vector<rtnl::OperstateWait> waits;
        for (std::size_t k = 0; k < nodes.size(); ++k)
            waits.push_back({&held_.handle(nodes[k]), std::move(ifindexes[k])});
        const auto left_ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        std::vector<std::vector<int>> left;
        try {
            left = rtnl::wait_operstate_up_many(waits, std::max(left_ms, std::chrono::milliseconds(0)));
        } catch (const KernelError& err) {
            throw err.prefixed("waiting for links to come up");
        }
        for (std::size_t w = 0; w < waits.size(); ++w) {
            if (left[w].empty()) continue;
            const Node& node = d_.nodes[nodes[w]];
            std::string list;
            for (int x : left[w]) {
                std::string name = "ifindex " + std::to_string(x);
                for (std::size_t k = 0; k < node.interfaces.size(); ++k)
                    if (p_.ifindex[nodes[w]][k] == x) name = node.interfaces[k].name;
                list += (list.empty() ? "" : ", ") + name;
            }
            throw KernelError(ETIMEDOUT, "waiting for links to come up",
                              "still not operationally up after " + std::to_string(opt_.link_timeout.count()) +
                                  " ms: " + list + " (namespace " + node.netns + ")")
                .prefixed(node.name);
        }
    }

    const Topology& d_;
    const plan::Plan& p_;
    state::Journal& journal_;
    const Hooks& hooks_;
    const Options& opt_;
    Held held_;
};

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

std::size_t fds_held_at_most(std::size_t nodes) {
    return 2 * std::min(nodes, Held::kHeldNodes) + std::min(nodes, kPeersPerBatch);
}

void execute(const Topology& desired, const plan::Plan& p, state::Journal& journal, const Hooks& hooks,
             const Options& options) {
    Executor(desired, p, journal, hooks, options).run();
}

}  // namespace labctl::realize
