// Semantic validation: everything the schema cannot say, and resolution into the model.

#include "topology/build.hpp"
#include "topology/builder.hpp"

#include <pwd.h>

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <unordered_map>

namespace labctl::topology {

std::string pointer_token(const std::string& key) {
    std::string out;
    for (char c : key) {
        if (c == '~') out += "~0";
        else if (c == '/') out += "~1";
        else out += c;
    }
    return out;
}

namespace detail {

std::string token(const std::string& key) { return pointer_token(key); }

std::string quote(const std::string& s) { return "\"" + s + "\""; }

std::optional<Mac> parse_mac(const std::string& text) {
    if (text.size() != 17) return std::nullopt;
    Mac mac{};
    for (std::size_t i = 0; i < 6; ++i) {
        if (i > 0 && text[i * 3 - 1] != ':') return std::nullopt;
        unsigned value = 0;
        for (std::size_t j = 0; j < 2; ++j) {
            char c = text[i * 3 + j];
            value <<= 4;
            if (c >= '0' && c <= '9') value |= static_cast<unsigned>(c - '0');
            else if (c >= 'a' && c <= 'f') value |= static_cast<unsigned>(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') value |= static_cast<unsigned>(c - 'A' + 10);
            else return std::nullopt;
        }
        mac[i] = static_cast<std::uint8_t>(value);
    }
    return mac;
}

bool valid_node_name(const std::string& s) {
    if (s.empty() || s.size() > 16 || s[0] < 'a' || s[0] > 'z') return false;
    return std::all_of(s.begin(), s.end(),
                       [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'; });
}

// Why an interface name is unusable, or "" when it is fine.
std::string ifname_problem(const std::string& name) {
    if (name.empty()) return "interface names cannot be empty";
    if (name.size() > 15)
        return "interface name " + quote(name) + " is " + std::to_string(name.size()) +
            " bytes; Linux allows at most 15 (IFNAMSIZ)";
    if (name == "." || name == "..") return "interface name " + quote(name) + " is not allowed";
    for (unsigned char c : name) {
        if (c == '/' || c == ':' || c <= ' ' || c == 0x7f)
            return "interface name " + quote(name) + " contains '/', ':', a space or a control character";
        // The kernel's dev_valid_name() uses isspace() of its own ctype table, where byte
        // 0xA0 (the end of UTF-8 "à", "Ġ"...) is a space: the kernel would refuse it.
        if (c == 0xA0)
            return "interface name " + quote(name) + " contains byte 0xA0, which the kernel counts as a space";
        if (c == '%')
            return "interface name " + quote(name) + " contains '%' (the kernel would replace %d with a number)";
    }
    return "";
}

// The rule rtnl's sysctl_path() applies: each '.'-separated component, with '/' read as
// '.', is neither "." nor "..".
bool sysctl_components_ok(const std::string& key) {
    std::size_t start = 0;
    for (;;) {
        const std::size_t dot = key.find('.', start);
        const std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
        if (part == "/" || part == "//") return false;
        if (dot == std::string::npos) return true;
        start = dot + 1;
    }
}

Topology Builder::run(const std::string& source) {
    topo_.source = source;
    if (!doc_.is_object()) return std::move(topo_);
    if (auto it = doc_.find("name"); it != doc_.end() && it->is_string()) topo_.name = it->get<std::string>();
    if (auto it = doc_.find("description"); it != doc_.end() && it->is_string())
        topo_.description = it->get<std::string>();
    if (auto it = doc_.find("nodes"); it != doc_.end() && it->is_object()) nodes(*it);
    if (auto it = doc_.find("links"); it != doc_.end() && it->is_array()) links(*it);
    finish_nodes();
    duplicate_addresses();
    gateways();
    if (auto it = doc_.find("checks"); it != doc_.end() && it->is_array()) checks(*it);
    return std::move(topo_);
}

}  // namespace detail

Topology build(const nlohmann::ordered_json& doc, const std::string& source, std::vector<TopologyProblem>& problems) {
    return detail::Builder(doc, problems).run(source);
}

}  // namespace labctl::topology
