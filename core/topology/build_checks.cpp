// Semantic validation of checks, and resolving each check's target to an address
// (builder.hpp).

#include "topology/builder.hpp"

#include <pwd.h>

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <unordered_map>

namespace labctl::topology::detail {

void Builder::checks(const Json& j) {
    for (std::size_t ci = 0; ci < j.size(); ++ci) {
        const Json& c = j[ci];
        std::string ptr = "/checks/" + std::to_string(ci);
        if (!c.is_object()) continue;
        if (c.contains("on") || c.contains("run")) {
            command_check(c, ptr);
            continue;
        }
        Check check;
        common_check_fields(check, c);
        bool ok = true;
        int family = 0;
        if (auto f = c.find("family"); f != c.end() && f->is_number_integer())
            family = f->get<int>() == 6 ? AF_INET6 : AF_INET;
        if (auto f = c.find("from"); f != c.end() && f->is_string()) {
            std::string from = f->get<std::string>();
            check.from_text = from;
            std::string node_name = from.substr(0, from.find(':'));
            auto n = find_node(node_name);
            if (!n) {
                error(ptr + "/from", "no node " + quote(node_name));
                ok = false;
            } else {
                check.from_node = *n;
                if (from.find(':') != std::string::npos) {
                    std::string ifname = from.substr(from.find(':') + 1);
                    check.from_interface = find_iface(pending_[*n], ifname);
                    if (!check.from_interface) {
                        error(ptr + "/from", "node " + node_name + " has no interface " + quote(ifname));
                        ok = false;
                    }
                }
            }
        } else {
            ok = false;
        }
        if (auto t = c.find("to"); t != c.end() && t->is_string()) {
            check.to_text = t->get<std::string>();
            if (auto addr = IpAddress::parse(check.to_text)) {
                check.to = *addr;
                if (family && family != addr->family)
                    error(ptr + "/family", "family does not match the address " + check.to_text);
            } else if (!resolve_target(check, family, ptr + "/to")) {
                ok = false;
            }
        } else {
            ok = false;
        }
        if (ok) {
            const Node& src = topo_.nodes[check.from_node];
            for (const auto& iface : src.interfaces)
                for (const auto& p : iface.addresses)
                    if (p.address == check.to) {
                        error(ptr + "/to",
                              check.to.to_string() + " is " + src.name + "'s own address (" + iface.name +
                                  "); a check pings another node");
                        ok = false;
                    }
        }
        if (auto e = c.find("expect"); e != c.end() && e->is_string())
            check.expect = e->get<std::string>() == "unreachable" ? Expect::unreachable : Expect::reachable;
        if (auto n = c.find("count"); n != c.end() && n->is_number_integer()) check.count = n->get<int>();
        if (auto n = c.find("timeout_ms"); n != c.end() && n->is_number_integer()) check.timeout_ms = n->get<int>();
        if (auto n = c.find("port"); n != c.end() && n->is_number_integer()) {
            check.kind = CheckKind::tcp;
            check.port = static_cast<std::uint16_t>(n->get<int>());
            if (c.contains("count")) error(ptr + "/count", "count is for pings; a TCP check makes one handshake");
        }
        if (ok) topo_.checks.push_back(check);
    }
}

// name, points, within_s: every kind has them.
void Builder::common_check_fields(Check& check, const Json& c) {
    if (auto f = c.find("name"); f != c.end() && f->is_string()) check.name = f->get<std::string>();
    if (auto f = c.find("points"); f != c.end() && f->is_number()) check.points = f->get<double>();
    if (auto f = c.find("within_s"); f != c.end() && f->is_number()) check.within_s = f->get<double>();
}

// A command check: `on` + `run`, none of the fields of pings and TCP checks.
void Builder::command_check(const Json& c, const std::string& ptr) {
    Check check;
    check.kind = CheckKind::command;
    common_check_fields(check, c);
    check.timeout_ms = 10000;
    bool ok = true;
    for (const char* field : {"from", "to", "port", "count", "family", "expect"})
        if (c.contains(field)) error(ptr + "/" + field, std::string(field) + " is not for command checks (on + run)");
    for (const char* field : {"on", "run"})
        if (!c.contains(field)) {
            error(ptr, std::string("a command check needs \"") + field + "\"");
            ok = false;
        }
    if (auto f = c.find("on"); f != c.end() && f->is_string()) {
        auto n = find_node(f->get<std::string>());
        if (!n) {
            error(ptr + "/on", "no node " + quote(f->get<std::string>()));
            ok = false;
        } else {
            check.on_node = *n;
            check.from_text = f->get<std::string>();
        }
    }
    if (auto f = c.find("run"); f != c.end() && f->is_array()) {
        for (const auto& a : *f)
            if (a.is_string()) check.run.push_back(a.get<std::string>());
        Command display{check.run, false};
        check.to_text = display.display();
    }
    if (auto n = c.find("expect_exit"); n != c.end() && n->is_number_integer()) check.expect_exit = n->get<int>();
    if (auto f = c.find("expect_stdout"); f != c.end() && f->is_string()) {
        check.expect_stdout = f->get<std::string>();
        try {
            std::regex re(*check.expect_stdout, kExpectStdoutSyntax);
        } catch (const std::regex_error& e) {
            error(ptr + "/expect_stdout", "not a valid regular expression: " + std::string(e.what()));
        }
    }
    if (auto n = c.find("timeout_ms"); n != c.end() && n->is_number_integer()) check.timeout_ms = n->get<int>();
    if (ok) topo_.checks.push_back(check);
}

bool Builder::resolve_target(Check& check, int family, const std::string& ptr) {
    const std::string& to = check.to_text;
    std::string node_name = to.substr(0, to.find(':'));
    auto n = find_node(node_name);
    if (!n) {
        error(ptr, quote(to) + " is neither a node, node:ifname, nor an IPv4/IPv6 address");
        return false;
    }
    const Node& node = topo_.nodes[*n];
    check.to_node = *n;
    std::vector<const Interface*> scope;
    if (to.find(':') != std::string::npos) {
        auto i = find_iface(pending_[*n], to.substr(to.find(':') + 1));
        if (!i) {
            error(ptr, "node " + node_name + " has no interface " + quote(to.substr(to.find(':') + 1)));
            return false;
        }
        scope.push_back(&node.interfaces[*i]);
    } else {
        for (const auto& iface : node.interfaces) scope.push_back(&iface);
    }
    auto first = [&](int fam) -> std::optional<IpAddress> {
        for (const Interface* iface : scope)
            for (const auto& p : iface->addresses)
                if (p.address.family == fam) return p.address;
        return std::nullopt;
    };
    std::optional<IpAddress> addr = family ? first(family) : first(AF_INET);
    if (!addr && !family) addr = first(AF_INET6);
    if (!addr) {
        error(ptr,
              to + " has no " +
                  (family == AF_INET6      ? "IPv6 "
                       : family == AF_INET ? "IPv4 "
                                           : "") +
                  "address to ping");
        return false;
    }
    check.to = *addr;
    return true;
}

}  // namespace labctl::topology::detail
