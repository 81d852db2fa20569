#include "events/events.hpp"

// glibc's <net/if.h> first: <linux/if.h> then adds only what glibc lacks (IFF_LOWER_UP), and
// a unity build may put a file including <net/if.h> in the same unit.
#include <net/if.h>
#include <arpa/inet.h>
#include <linux/if_addr.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <linux/if.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/socket.h>

#include <libmnl/libmnl.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <memory>
#include <set>

#include "base/error.hpp"
#include "netns/netns.hpp"
#include "state/state.hpp"
#include "topology/load.hpp"

namespace labctl::events {

namespace {

constexpr std::uint8_t kOperUnknown = 0;
constexpr std::uint8_t kOperUp = 6;

std::string attr_str(const nlattr* a) {
    if (!a) return {};
    const char* p = static_cast<const char*>(mnl_attr_get_payload(a));
    return std::string(p, strnlen(p, mnl_attr_get_payload_len(a)));
}

std::optional<IpAddress> attr_ip(const nlattr* a, int family) {
    if (!a) return std::nullopt;
    IpAddress ip;
    ip.family = family;
    if (mnl_attr_get_payload_len(a) < ip.size()) return std::nullopt;
    std::memcpy(ip.bytes.data(), mnl_attr_get_payload(a), ip.size());
    return ip;
}

// The state a link event shows: "up", or "down" with why.
std::pair<std::string, std::string> shown_state(const InterfaceState& s) {
    if (!s.present) return {"removed", ""};
    if (s.up()) return {"up", ""};
    return {"down", s.why_down()};
}

bool impairing(const std::string& kind) { return kind == "netem" || kind == "tbf"; }

}  // namespace

std::string operstate_name(std::uint8_t operstate) {
    static const char* names[] = {"unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up"};
    return operstate < 7 ? names[operstate] : "unknown";
}

bool InterfaceState::up() const noexcept {
    return present && admin_up && (operstate == kOperUp || operstate == kOperUnknown);
}

bool InterfaceState::impaired() const noexcept { return impairing(root_qdisc); }

std::string InterfaceState::why_down() const {
    if (!present) return "missing";
    if (up()) return "";
    if (!admin_up) return "admin down";
    if (!carrier) return "no carrier";
    return operstate_name(operstate);
}

double now() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

std::string to_text(const Event& e) {
    std::time_t secs = static_cast<std::time_t>(e.time);
    std::tm tm{};
    ::localtime_r(&secs, &tm);
    char stamp[32];
    std::snprintf(stamp, sizeof stamp, "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>((e.time - static_cast<double>(secs)) * 1000));
    std::string where = e.type == "lab" ? "lab " + e.lab : e.node + (e.interface.empty() ? "" : ":" + e.interface);
    std::string line = std::string(stamp) + " " + where + " " + (e.type == "lab" ? "" : e.type + " ") + e.action;
    if (!e.detail.empty()) line += (e.type == "link" ? " (" + e.detail + ")" : " " + e.detail);
    if (!e.link.empty()) line += " [" + e.link + "]";
    return line;
}

nlohmann::json to_json(const Event& e) {
    nlohmann::json j{{"time", e.time}, {"lab", e.lab}, {"type", e.type}, {"action", e.action}};
    if (!e.node.empty()) j["node"] = e.node;
    if (!e.interface.empty()) j["interface"] = e.interface;
    if (!e.detail.empty()) j["detail"] = e.detail;
    if (!e.link.empty()) j["link"] = e.link;
    return j;
}

// --- LabWatcher ----------------------------------------------------------------------

LabWatcher::LabWatcher(topology::Topology topo) : topo_(std::move(topo)) {
    by_node_.assign(topo_.nodes.size(), std::nullopt);
    std::vector<netns::NetnsHandle> handles;
    std::vector<std::size_t> nodes;
    for (std::size_t n = 0; n < topo_.nodes.size(); ++n) {
        if (!netns::identity(topo_.nodes[n].netns)) continue;  // missing: shown so
        try {
            handles.push_back(netns::open(topo_.nodes[n].netns));
            nodes.push_back(n);
        } catch (const KernelError& e) {
            if (e.errno_value() != ENOENT && e.errno_value() != EINVAL) throw;
        }
    }
    std::vector<const netns::NetnsHandle*> ptrs;
    for (const auto& h : handles) ptrs.push_back(&h);
    std::vector<std::pair<nl::Socket, nl::Socket>> sockets;
    sockets.reserve(handles.size());
    netns::run_in_each(ptrs,
                       [&](std::size_t) { sockets.emplace_back(nl::Socket::open_route(), nl::Socket::open_route()); });
    static const unsigned groups[] = {RTNLGRP_LINK,       RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR,
                                      RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE,  RTNLGRP_TC};
    for (std::size_t i = 0; i < sockets.size(); ++i) {
        for (unsigned g : groups)
            if (::setsockopt(sockets[i].first.fd(), SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g, sizeof g) != 0)
                throw_last_errno(topo_.nodes[nodes[i]].name + ": subscribing to netlink group " + std::to_string(g));
        watched_.push_back(Watched{nodes[i], std::move(sockets[i].first), std::move(sockets[i].second), {}});
        by_node_[nodes[i]] = watched_.size() - 1;
    }
    // Subscribed before dumping: a change made meanwhile is in both (and shown once).
    for (auto& w : watched_) dump(w, nullptr);
}

std::vector<int> LabWatcher::fds() const {
    std::vector<int> out;
    for (const auto& w : watched_) out.push_back(w.events.fd());
    return out;
}

bool LabWatcher::node_present(std::size_t node) const { return node < by_node_.size() && by_node_[node]; }

InterfaceState LabWatcher::interface(std::size_t node, const std::string& ifname) const {
    if (!node_present(node)) return {};
    for (const auto& [index, iface] : watched_[*by_node_[node]].ifaces)
        if (iface.name == ifname) return iface.state;
    return {};
}

Event LabWatcher::make(const Watched& w, const std::string& ifname, std::string type, std::string action,
                       std::string detail) const {
    Event e;
    e.time = now();
    e.lab = topo_.name;
    e.type = std::move(type);
    e.node = topo_.nodes[w.node].name;
    e.interface = ifname;
    e.action = std::move(action);
    e.detail = std::move(detail);
    if (!ifname.empty()) {
        const auto& node = topo_.nodes[w.node];
        if (auto i = node.find_interface(ifname); i && node.interfaces[*i].link) {
            const auto& link = topo_.links[*node.interfaces[*i].link];
            e.link = topo_.end_name(link.ends[0]) + " " + topo_.end_name(link.ends[1]);
        }
    }
    return e;
}

void LabWatcher::dump(Watched& w, std::vector<Event>* changes) {
    std::map<int, Iface> fresh;
    const std::string& node = topo_.nodes[w.node].name;
    {
        nl::Message m(RTM_GETLINK, 0);
        m.header<ifinfomsg>().ifi_family = AF_UNSPEC;
        nl::dump(
            w.query, m,
            [&](const nlmsghdr* nlh) {
                auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
                auto attrs = nl::parse_attrs(nlh, sizeof(ifinfomsg), IFLA_MAX);
                Iface& f = fresh[ifi->ifi_index];
                f.name = attr_str(attrs[IFLA_IFNAME]);
                f.state.present = true;
                f.state.admin_up = ifi->ifi_flags & IFF_UP;
                f.state.carrier = ifi->ifi_flags & IFF_LOWER_UP;
                f.state.operstate = attrs[IFLA_OPERSTATE] ? mnl_attr_get_u8(attrs[IFLA_OPERSTATE]) : 0;
            },
            node + ": listing interfaces");
    }
    {
        nl::Message m(RTM_GETQDISC, 0);
        m.header<tcmsg>().tcm_family = AF_UNSPEC;
        nl::dump(
            w.query, m,
            [&](const nlmsghdr* nlh) {
                auto* tc = static_cast<const tcmsg*>(mnl_nlmsg_get_payload(nlh));
                if (tc->tcm_parent != TC_H_ROOT) return;
                auto attrs = nl::parse_attrs(nlh, sizeof(tcmsg), TCA_MAX);
                if (auto it = fresh.find(tc->tcm_ifindex); it != fresh.end())
                    it->second.state.root_qdisc = attr_str(attrs[TCA_KIND]);
            },
            node + ": listing qdiscs");
    }
    if (changes) {
        for (const auto& [index, f] : fresh) {
            auto old = w.ifaces.find(index);
            InterfaceState before = old == w.ifaces.end() ? InterfaceState{} : old->second.state;
            if (shown_state(before) != shown_state(f.state)) {
                auto [action, detail] = shown_state(f.state);
                changes->push_back(make(w, f.name, "link", action, detail));
            }
            if (before.impaired() != f.state.impaired())
                changes->push_back(make(w, f.name, "qdisc", f.state.impaired() ? "added" : "removed",
                                        f.state.impaired() ? f.state.root_qdisc : before.root_qdisc));
        }
        for (const auto& [index, f] : w.ifaces)
            if (!fresh.count(index)) changes->push_back(make(w, f.name, "link", "removed", ""));
    }
    w.ifaces = std::move(fresh);
}

void LabWatcher::handle(Watched& w, const nlmsghdr* nlh, std::vector<Event>& out) {
    auto name_of = [&](int index) {
        auto it = w.ifaces.find(index);
        if (it != w.ifaces.end()) return it->second.name;
        return "if" + std::to_string(index);
    };
    switch (nlh->nlmsg_type) {
        case RTM_NEWLINK:
        case RTM_DELLINK: {
            auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
            auto attrs = nl::parse_attrs(nlh, sizeof(ifinfomsg), IFLA_MAX);
            Iface& f = w.ifaces[ifi->ifi_index];
            InterfaceState before = f.state;
            if (attrs[IFLA_IFNAME]) f.name = attr_str(attrs[IFLA_IFNAME]);
            if (nlh->nlmsg_type == RTM_DELLINK) {
                std::string name = f.name;
                w.ifaces.erase(ifi->ifi_index);
                if (before.present) out.push_back(make(w, name, "link", "removed", ""));
                return;
            }
            f.state.present = true;
            f.state.admin_up = ifi->ifi_flags & IFF_UP;
            f.state.carrier = ifi->ifi_flags & IFF_LOWER_UP;
            if (attrs[IFLA_OPERSTATE]) f.state.operstate = mnl_attr_get_u8(attrs[IFLA_OPERSTATE]);
            if (!before.present) {
                out.push_back(make(w, f.name, "link", "added", ""));
                if (shown_state(f.state).first == "up") out.push_back(make(w, f.name, "link", "up", ""));
            } else if (shown_state(before) != shown_state(f.state)) {
                auto [action, detail] = shown_state(f.state);
                out.push_back(make(w, f.name, "link", action, detail));
            }
            return;
        }
        case RTM_NEWADDR:
        case RTM_DELADDR: {
            auto* ifa = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(nlh));
            // Link-local (fe80::) and host-scope (127.0.0.1) addresses come and go with
            // the links; they are not part of the lab's design.
            if (ifa->ifa_scope != RT_SCOPE_UNIVERSE) return;
            auto attrs = nl::parse_attrs(nlh, sizeof(ifaddrmsg), IFA_MAX);
            auto ip = attr_ip(attrs[IFA_LOCAL] ? attrs[IFA_LOCAL] : attrs[IFA_ADDRESS], ifa->ifa_family);
            if (!ip) return;
            IpPrefix p{*ip, ifa->ifa_prefixlen};
            out.push_back(make(w, name_of(static_cast<int>(ifa->ifa_index)), "address",
                               nlh->nlmsg_type == RTM_NEWADDR ? "added" : "removed", p.to_string()));
            return;
        }
        case RTM_NEWROUTE:
        case RTM_DELROUTE: {
            auto* rt = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(nlh));
            auto attrs = nl::parse_attrs(nlh, sizeof(rtmsg), RTA_MAX);
            std::uint32_t table = attrs[RTA_TABLE] ? mnl_attr_get_u32(attrs[RTA_TABLE]) : rt->rtm_table;
            if (table != RT_TABLE_MAIN || rt->rtm_type != RTN_UNICAST) return;
            auto dst = attr_ip(attrs[RTA_DST], rt->rtm_family);
            // fe80::/64 comes with every IPv6 link; not part of the design either.
            if (dst && dst->family == AF_INET6 && dst->bytes[0] == 0xfe && (dst->bytes[1] & 0xc0) == 0x80) return;
            std::string text = dst ? IpPrefix{*dst, rt->rtm_dst_len}.to_string() : "default";
            if (auto gw = attr_ip(attrs[RTA_GATEWAY], rt->rtm_family)) text += " via " + gw->to_string();
            std::string ifname = attrs[RTA_OIF] ? name_of(static_cast<int>(mnl_attr_get_u32(attrs[RTA_OIF]))) : "";
            if (!ifname.empty()) text += " dev " + ifname;
            out.push_back(make(w, ifname, "route", nlh->nlmsg_type == RTM_NEWROUTE ? "added" : "removed", text));
            return;
        }
        case RTM_NEWQDISC:
        case RTM_DELQDISC: {
            auto* tc = static_cast<const tcmsg*>(mnl_nlmsg_get_payload(nlh));
            if (tc->tcm_parent != TC_H_ROOT) return;
            auto attrs = nl::parse_attrs(nlh, sizeof(tcmsg), TCA_MAX);
            auto it = w.ifaces.find(tc->tcm_ifindex);
            if (it == w.ifaces.end()) return;
            std::string kind = attr_str(attrs[TCA_KIND]);
            std::string before = it->second.state.root_qdisc;
            if (nlh->nlmsg_type == RTM_DELQDISC) {
                if (before == kind) it->second.state.root_qdisc.clear();
            } else {
                it->second.state.root_qdisc = kind;
            }
            const std::string& after = it->second.state.root_qdisc;
            if (impairing(before) != impairing(after) || (impairing(after) && before != after))
                out.push_back(make(w, it->second.name, "qdisc", impairing(after) ? "added" : "removed",
                                   impairing(after) ? after : before));
            return;
        }
        default: return;
    }
}

std::vector<Event> LabWatcher::read(std::size_t i) {
    Watched& w = watched_.at(i);
    std::vector<Event> out;
    std::vector<char> buf(64 * 1024);
    for (;;) {
        ssize_t n = ::recv(w.events.fd(), buf.data(), buf.size(), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            if (errno == ENOBUFS) {
                dump(w, &out);
                continue;
            }
            throw_last_errno(topo_.nodes[w.node].name + ": reading netlink notifications");
        }
        if (n == 0) break;
        int len = static_cast<int>(n);
        for (auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data()); NLMSG_OK(nlh, static_cast<unsigned>(len));
             nlh = NLMSG_NEXT(nlh, len))
            handle(w, nlh, out);
    }
    return out;
}

// --- StateWatcher --------------------------------------------------------------------

StateWatcher::StateWatcher() {
    auto labs = state::Journal::list();  // creates the root when absent (mode 0700)
    fd_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (!fd_) throw_last_errno("watching the state directory (inotify_init1)");
    root_wd_ = ::inotify_add_watch(fd_.get(), state::state_root().c_str(),
                                   IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR | IN_DONT_FOLLOW);
    if (root_wd_ < 0) throw_last_errno(state::state_root() + ": watching (inotify_add_watch)");
    for (const auto& lab : labs) watch_lab(lab);
    // Absent until the first namespace is made: then labs made from here on are
    // watched through their state directories alone, which is enough for up and down.
    netns_wd_ = ::inotify_add_watch(fd_.get(), netns::netns_dir().c_str(),
                                    IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR);
}

void StateWatcher::watch_lab(const std::string& name) {
    if (name == "locks") return;
    std::string dir = state::state_root() + "/" + name;
    int wd = ::inotify_add_watch(
        fd_.get(), dir.c_str(),
        IN_MODIFY | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_ONLYDIR | IN_DONT_FOLLOW);
    if (wd >= 0) lab_wds_[wd] = name;  // gone already (or not a directory): nothing to watch
}

std::vector<std::string> StateWatcher::read() {
    std::set<std::string> changed;
    alignas(inotify_event) char buf[16 * 1024];
    for (;;) {
        ssize_t n = ::read(fd_.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            throw_last_errno(state::state_root() + ": reading inotify events");
        }
        for (char* p = buf; p < buf + n;) {
            auto* ev = reinterpret_cast<inotify_event*>(p);
            p += sizeof(inotify_event) + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                // Events were lost: every lab may have changed.
                for (const auto& lab : state::Journal::list()) {
                    watch_lab(lab);
                    changed.insert(lab);
                }
                for (const auto& [wd, lab] : lab_wds_) changed.insert(lab);
                continue;
            }
            if (ev->wd == netns_wd_ && netns_wd_ >= 0) {
                std::string name = ev->len ? ev->name : "";
                for (const auto& [wd, lab] : lab_wds_)
                    if (name.size() > lab.size() + 1 && name.starts_with(lab + "-")) changed.insert(lab);
                continue;
            }
            if (ev->wd == root_wd_) {
                std::string name = ev->len ? ev->name : "";
                if (name.empty() || name == "locks") continue;
                if (ev->mask & (IN_CREATE | IN_MOVED_TO)) watch_lab(name);
                changed.insert(name);
                continue;
            }
            auto it = lab_wds_.find(ev->wd);
            if (it == lab_wds_.end()) continue;
            changed.insert(it->second);
            if (ev->mask & IN_IGNORED) lab_wds_.erase(it);
        }
    }
    return {changed.begin(), changed.end()};
}

std::vector<std::string> running_labs() {
    std::vector<std::string> out;
    try {
        for (const auto& name : state::Journal::list()) {
            try {
                auto rec = state::Journal::load(name);
                if (rec && rec->complete) out.push_back(name);
            } catch (const std::exception&) {}
        }
    } catch (const std::exception&) {}
    return out;
}

void follow(const std::string& lab, const std::function<bool(const Event&)>& each) {
    auto is_up = [&] {
        auto labs = running_labs();
        return std::find(labs.begin(), labs.end(), lab) != labs.end();
    };
    StateWatcher state;  // first: a lab going down from here on is seen
    if (!is_up()) throw LabError("lab " + lab + " is not up");
    std::string text = state::Journal::topology_text(lab);
    auto watcher = std::make_unique<LabWatcher>(topology::load_text(text, lab));
    auto lab_event = [&](const char* action) {
        Event e;
        e.time = now();
        e.lab = lab;
        e.type = "lab";
        e.action = action;
        return e;
    };
    // Scripts wait for this line before they change anything: from here on, nothing
    // is missed.
    if (!each(lab_event("watching"))) return;
    for (;;) {
        std::vector<pollfd> fds{{state.fd(), POLLIN, 0}};
        for (int fd : watcher->fds()) fds.push_back({fd, POLLIN, 0});
        if (::poll(fds.data(), fds.size(), -1) < 0) {
            if (errno == EINTR) continue;
            throw_last_errno("lab " + lab + ": waiting for events (poll)");
        }
        for (std::size_t i = 1; i < fds.size(); ++i)
            if (fds[i].revents)
                for (const auto& e : watcher->read(i - 1))
                    if (!each(e)) return;
        if (!fds[0].revents) continue;
        auto changed = state.read();
        if (std::find(changed.begin(), changed.end(), lab) == changed.end()) continue;
        if (!is_up()) {
            each(lab_event("down"));
            return;
        }
        std::string now_text;
        try {
            now_text = state::Journal::topology_text(lab);
        } catch (const std::exception&) {
            continue;  // going away: the next event says so
        }
        if (now_text == text) continue;
        text = now_text;
        watcher = std::make_unique<LabWatcher>(topology::load_text(text, lab));
        if (!each(lab_event("changed"))) return;
    }
}

}  // namespace labctl::events
