#include "base/ip.hpp"

#include <arpa/inet.h>

#include <charconv>

namespace labctl {

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
    if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
    std::string s(text);
    IpAddress a;
    if (::inet_pton(AF_INET, s.c_str(), a.bytes.data()) == 1) {
        a.family = AF_INET;
        return a;
    }
    if (::inet_pton(AF_INET6, s.c_str(), a.bytes.data()) == 1) {
        a.family = AF_INET6;
        return a;
    }
    return std::nullopt;
}

std::string IpAddress::to_string() const {
    char buf[INET6_ADDRSTRLEN] = {};
    if (family != AF_INET && family != AF_INET6) return "";
    ::inet_ntop(family, bytes.data(), buf, sizeof buf);
    return buf;
}

std::optional<IpPrefix> IpPrefix::parse(std::string_view text) {
    auto slash = text.find('/');
    if (slash == std::string_view::npos) return std::nullopt;
    auto addr = IpAddress::parse(text.substr(0, slash));
    if (!addr) return std::nullopt;
    auto len_text = text.substr(slash + 1);
    int len = -1;
    auto [end, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
    if (ec != std::errc{} || end != len_text.data() + len_text.size() || len_text.empty() || len_text.size() > 3 ||
        (len_text.size() > 1 && len_text[0] == '0') || len < 0 || len > addr->max_prefix())
        return std::nullopt;
    return IpPrefix{*addr, len};
}

std::string IpPrefix::to_string() const { return address.to_string() + "/" + std::to_string(length); }

IpAddress IpPrefix::network() const {
    IpAddress n = address;
    for (std::size_t i = 0; i < n.size(); ++i) {
        int bits = length - static_cast<int>(i) * 8;
        if (bits >= 8) continue;
        n.bytes[i] &= bits <= 0 ? 0 : static_cast<std::uint8_t>(0xff << (8 - bits));
    }
    return n;
}

IpAddress IpPrefix::broadcast() const {
    IpAddress b = address;
    for (std::size_t i = 0; i < b.size(); ++i) {
        int bits = length - static_cast<int>(i) * 8;
        if (bits >= 8) continue;
        b.bytes[i] |= bits <= 0 ? 0xff : static_cast<std::uint8_t>(0xff >> bits);
    }
    return b;
}

bool IpPrefix::contains(const IpAddress& a) const {
    if (a.family != address.family) return false;
    return IpPrefix{a, length}.network() == network();
}

}  // namespace labctl
