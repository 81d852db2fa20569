#pragma once
// IPv4/IPv6 addresses and prefixes as values, parsed with inet_pton.

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace labctl {

struct IpAddress {
    int family = AF_UNSPEC;                // AF_INET or AF_INET6
    std::array<std::uint8_t, 16> bytes{};  // network order; IPv4 uses the first 4

    // "10.0.0.1" or "fd00::1"; nullopt when it is neither.
    static std::optional<IpAddress> parse(std::string_view text);
    std::string to_string() const;
    std::size_t size() const noexcept { return family == AF_INET ? 4 : 16; }
    int max_prefix() const noexcept { return family == AF_INET ? 32 : 128; }
    bool operator==(const IpAddress&) const = default;
    auto operator<=>(const IpAddress&) const = default;
};

struct IpPrefix {
    IpAddress address;
    int length = 0;

    // "10.0.0.1/24": the length is required. nullopt when malformed.
    static std::optional<IpPrefix> parse(std::string_view text);
    std::string to_string() const;
    // The address with the host bits cleared.
    IpAddress network() const;
    // The IPv4 broadcast address of the prefix (meaningless for IPv6).
    IpAddress broadcast() const;
    bool contains(const IpAddress& a) const;
    bool operator==(const IpPrefix&) const = default;
};

}  // namespace labctl
