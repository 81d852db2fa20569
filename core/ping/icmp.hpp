#pragma once
// ICMP and ICMPv6 echo messages as bytes: the pure half of the pinger, testable without root.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace labctl::ping {

inline constexpr std::size_t kIcmpHeaderSize = 8;
// As ping(8): a 64-byte ICMP message.
inline constexpr std::size_t kPayloadSize = 56;
// The part of the payload that names the run, the probe and the request.
inline constexpr std::size_t kPayloadKeySize = 14;

using Payload = std::array<std::uint8_t, kPayloadSize>;

// RFC 1071 one's-complement sum of `bytes`, ready to store (network order as bytes).
std::uint16_t internet_checksum(std::span<const std::uint8_t> bytes);

// The payload of request `seq` of probe `probe_index` in the run named by `token`:
// token (8 bytes) | probe index (4) | seq (2) | a fill pattern. Every byte is checked
// on the echo reply, so another pinger's replies (same identifier by chance) never count.
Payload echo_payload(std::uint64_t token, std::uint32_t probe_index, std::uint16_t seq);

// An echo request: ICMP header then `payload`. IPv4 gets its checksum here; for ICMPv6 the
// kernel fills it (raw IPPROTO_ICMPV6 sockets always checksum, at offset 2).
std::vector<std::uint8_t> encode_echo_request(int family, std::uint16_t id, std::uint16_t seq,
                                              std::span<const std::uint8_t> payload);

struct IcmpHeader {
    std::uint8_t type = 0;
    std::uint8_t code = 0;
    std::uint16_t id = 0;   // echo messages only
    std::uint16_t seq = 0;  // echo messages only
};

// The header at the start of an ICMP message; nullopt when shorter than 8 bytes.
std::optional<IcmpHeader> parse_icmp_header(std::span<const std::uint8_t> message);

struct Ipv4Packet {
    std::uint8_t ttl = 0;
    std::span<const std::uint8_t> payload;  // what follows the IP header
};

// What a raw IPv4 socket reads: the IP header, then the ICMP message. nullopt when malformed.
std::optional<Ipv4Packet> parse_ipv4(std::span<const std::uint8_t> packet);

bool is_echo_request(int family, std::uint8_t type);
bool is_echo_reply(int family, std::uint8_t type);
// Destination unreachable, time exceeded or parameter problem: the request is lost for good.
// (Fragmentation needed / packet too big is not: it only teaches the path MTU.)
bool is_fatal_error(int family, std::uint8_t type, std::uint8_t code);

// The words of ping(8) for an ICMP error: "Destination host unreachable",
// "Time to live exceeded", "Destination unreachable: Address unreachable".
std::string describe_icmp_error(int family, std::uint8_t type, std::uint8_t code);

}  // namespace labctl::ping
