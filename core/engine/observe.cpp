// Observing a running lab for the plan (observe), and the lab's runtime changes as the
// JSON the journal keeps.

#include <net/if.h>

#include <algorithm>
#include <exception>
#include <thread>
#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/timing.hpp"
#include "engine/chunks.hpp"
#include "engine/internal.hpp"
#include "netns/netns.hpp"
#include "rtnl/rtnl.hpp"

namespace labctl::engine {

using namespace topology;
using Json = nlohmann::json;

namespace detail {

namespace {

// Routes the kernel makes itself (for addresses, link-local, router advertisements,
// redirects) are not the lab's; everything else in the main table is.
constexpr std::uint8_t kProtoRedirect = 1, kProtoKernel = 2, kProtoRa = 9;
constexpr std::uint32_t kTableMain = 254;
constexpr std::uint8_t kRouteUnicast = 1;

bool link_local(const IpPrefix& p) {
    return p.address.family == AF_INET6 && p.address.bytes[0] == 0xfe && (p.address.bytes[1] & 0xc0) == 0x80;
}

}  // namespace

plan::Observed observe(const std::string& lab, const state::LabRecord& rec, const Topology& built,
                       const std::vector<Touch>& touch, bool dump_all) {
    Timing timing("observing the lab");
    plan::Observed o;
    o.built = built;
    o.runtime = runtime_from_json(built, rec.runtime);
    std::vector<const state::RecordedNetns*> opened;  // to be read: present and wanted
    std::vector<std::size_t> slot;
    for (const auto& ns : rec.namespaces) {
        if (!lab_namespace_name(lab, ns.name)) continue;
        plan::ObservedNode on;
        on.name = ns.name.substr(lab.size() + 1);
        auto t = std::find_if(touch.begin(), touch.end(), [&](const Touch& x) { return x.node == on.name; });
        const bool wanted = dump_all || t != touch.end();
        if (!dump_all && t != touch.end() && !t->interfaces.empty()) {
            on.partial = true;
            on.asked = t->interfaces;
        }
        if (wanted || ns.ino == 0) {
            auto id = netns::identity(ns.name);
            on.present = id && ns.ino != 0 && id->first == ns.dev && id->second == ns.ino;
            on.leftover = ns.ino == 0 && netns::exists(ns.name);
        } else {
            on.present = true;  // a node a runtime change does not touch is trusted to be as built
        }
        o.nodes.push_back(on);
        if (on.present && wanted) {
            opened.push_back(&ns);
            slot.push_back(o.nodes.size() - 1);
        }
    }
    if (opened.empty()) return o;
    // Each namespace: a socket opened inside it, then its links, addresses and routes. On
    // a few threads (as namespaces are made), each with every k-th namespace, a chunk of
    // them open at a time (the fds held do not grow with the lab).
    const std::size_t threads =
        std::clamp<std::size_t>(std::min<std::size_t>(std::thread::hardware_concurrency(), opened.size() / 32), 1, 4);
    const std::size_t chunk = std::max<std::size_t>(1, namespaces_at_once() / threads);
    auto read_chunk = [&](const std::vector<std::size_t>& mine, std::size_t b, std::size_t e) {
        std::vector<netns::NetnsHandle> held;
        std::vector<std::size_t> ks;
        for (std::size_t i = b; i < e; ++i) {
            const std::size_t k = mine[i];
            auto h = netns::open(opened[k]->name);
            // Replaced since it was looked at: not the lab's namespace.
            if (h.dev != opened[k]->dev || h.ino != opened[k]->ino) {
                o.nodes[slot[k]].present = false;
                continue;
            }
            held.push_back(std::move(h));
            ks.push_back(k);
        }
        std::vector<const netns::NetnsHandle*> list;
        for (const auto& h : held) list.push_back(&h);
        auto handles = rtnl::Handle::open_in_each(list);
        for (std::size_t j = 0; j < ks.size(); ++j) {
            plan::ObservedNode& on = o.nodes[slot[ks[j]]];
            try {
                std::vector<rtnl::LinkInfo> links;
                if (on.partial) {
                    for (const auto& name : on.asked)
                        if (auto l = rtnl::link_get(handles[j], name)) links.push_back(std::move(*l));
                } else {
                    links = rtnl::link_dump(handles[j]);
                }
                auto addrs = rtnl::addr_dump(handles[j]);
                auto routes = rtnl::route_dump(handles[j]);
                for (const auto& l : links) {
                    plan::ObservedInterface oi;
                    oi.name = l.name;
                    oi.ifindex = l.ifindex;
                    oi.admin_up = (l.flags & IFF_UP) != 0;
                    oi.mtu = l.mtu;
                    for (const auto& a : addrs)
                        if (a.ifindex == l.ifindex && !link_local(a.prefix)) oi.addresses.push_back(a.prefix);
                    on.interfaces.push_back(std::move(oi));
                }
                for (const auto& r : routes) {
                    if (r.table != kTableMain || r.type != kRouteUnicast) continue;
                    if (r.protocol == kProtoKernel || r.protocol == kProtoRa || r.protocol == kProtoRedirect) continue;
                    on.routes.push_back({r.family, r.dst, r.gateway, r.oif, r.metric});
                }
                on.dumped = true;
            } catch (const KernelError& e) {
                throw e.prefixed(on.name);
            }
        }
    };
    auto read = [&](std::size_t first, std::size_t step) {
        std::vector<std::size_t> mine;
        for (std::size_t k = first; k < opened.size(); k += step) mine.push_back(k);
        for_each_chunk(mine.size(), chunk, [&](std::size_t b, std::size_t e) { read_chunk(mine, b, e); });
    };
    if (threads == 1) {
        read(0, 1);
        return o;
    }
    std::vector<std::exception_ptr> failed(threads);
    std::vector<std::thread> workers;
    for (std::size_t t = 0; t < threads; ++t)
        workers.emplace_back([&, t] {
            try {
                read(t, threads);
            } catch (...) {
                failed[t] = std::current_exception();
            }
        });
    for (auto& w : workers) w.join();
    for (auto& f : failed)
        if (f) std::rethrow_exception(f);
    return o;
}

plan::Runtime runtime_from_json(const Topology& topo, const std::string& text) {
    plan::Runtime rt;
    if (text.empty()) return rt;
    Json j = Json::parse(text, nullptr, false);
    if (!j.is_object()) return rt;
    if (j.contains("links_down") && j["links_down"].is_array())
        for (const auto& x : j["links_down"])
            if (x.is_string()) rt.links_down.insert(x.get<std::string>());
    if (j.contains("nodes_stopped") && j["nodes_stopped"].is_array())
        for (const auto& x : j["nodes_stopped"])
            if (x.is_string()) rt.nodes_stopped.insert(x.get<std::string>());
    if (j.contains("impaired") && j["impaired"].is_object()) {
        for (const auto& [key, v] : j["impaired"].items()) {
            Impairment im;
            auto get = [&](const char* f, std::optional<double>& out) {
                if (v.contains(f) && v[f].is_number()) out = v[f].get<double>();
            };
            get("delay_ms", im.delay_ms);
            get("jitter_ms", im.jitter_ms);
            get("loss_pct", im.loss_pct);
            get("rate_mbit", im.rate_mbit);
            get("duplicate_pct", im.duplicate_pct);
            get("reorder_pct", im.reorder_pct);
            rt.impaired[key] = im;
        }
    }
    (void)topo;
    return rt;
}

Json impairment_json(const Impairment& im) {
    Json v = Json::object();
    auto put = [&](const char* f, const std::optional<double>& x) {
        if (x) v[f] = *x;
    };
    put("delay_ms", im.delay_ms);
    put("jitter_ms", im.jitter_ms);
    put("loss_pct", im.loss_pct);
    put("rate_mbit", im.rate_mbit);
    put("duplicate_pct", im.duplicate_pct);
    put("reorder_pct", im.reorder_pct);
    return v;
}

std::string runtime_to_json(const plan::Runtime& rt) {
    Json impaired = Json::object();
    for (const auto& [k, v] : rt.impaired) impaired[k] = impairment_json(v);
    return Json{{"links_down", rt.links_down}, {"nodes_stopped", rt.nodes_stopped}, {"impaired", impaired}}.dump();
}

}  // namespace detail

}  // namespace labctl::engine
