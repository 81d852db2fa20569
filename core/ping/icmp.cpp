#include "ping/icmp.hpp"

#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <sys/socket.h>

#include <algorithm>

namespace labctl::ping {

std::uint16_t internet_checksum(std::span<const std::uint8_t> bytes) {
    std::uint32_t sum = 0;
    std::size_t i = 0;
    for (; i + 1 < bytes.size(); i += 2) sum += (std::uint32_t(bytes[i]) << 8) | bytes[i + 1];
    if (i < bytes.size()) sum += std::uint32_t(bytes[i]) << 8;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<std::uint16_t>(~sum & 0xffff);
}

Payload echo_payload(std::uint64_t token, std::uint32_t probe_index, std::uint16_t seq) {
    Payload p{};
    for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(token >> (56 - 8 * i));
    for (int i = 0; i < 4; ++i) p[8 + i] = static_cast<std::uint8_t>(probe_index >> (24 - 8 * i));
    p[12] = static_cast<std::uint8_t>(seq >> 8);
    p[13] = static_cast<std::uint8_t>(seq);
    for (std::size_t i = kPayloadKeySize; i < p.size(); ++i) p[i] = static_cast<std::uint8_t>(i);
    return p;
}

std::vector<std::uint8_t> encode_echo_request(int family, std::uint16_t id, std::uint16_t seq,
                                              std::span<const std::uint8_t> payload) {
    std::vector<std::uint8_t> m(kIcmpHeaderSize + payload.size());
    m[0] = family == AF_INET ? ICMP_ECHO : ICMP6_ECHO_REQUEST;
    m[1] = 0;
    m[4] = static_cast<std::uint8_t>(id >> 8);
    m[5] = static_cast<std::uint8_t>(id);
    m[6] = static_cast<std::uint8_t>(seq >> 8);
    m[7] = static_cast<std::uint8_t>(seq);
    std::copy(payload.begin(), payload.end(), m.begin() + kIcmpHeaderSize);
    if (family == AF_INET) {
        std::uint16_t sum = internet_checksum(m);
        m[2] = static_cast<std::uint8_t>(sum >> 8);
        m[3] = static_cast<std::uint8_t>(sum);
    }
    return m;
}

std::optional<IcmpHeader> parse_icmp_header(std::span<const std::uint8_t> message) {
    if (message.size() < kIcmpHeaderSize) return std::nullopt;
    IcmpHeader h;
    h.type = message[0];
    h.code = message[1];
    h.id = static_cast<std::uint16_t>((message[4] << 8) | message[5]);
    h.seq = static_cast<std::uint16_t>((message[6] << 8) | message[7]);
    return h;
}

std::optional<Ipv4Packet> parse_ipv4(std::span<const std::uint8_t> packet) {
    if (packet.size() < 20 || (packet[0] >> 4) != 4) return std::nullopt;
    std::size_t header_size = std::size_t(packet[0] & 0x0f) * 4;
    if (header_size < 20 || header_size > packet.size()) return std::nullopt;
    return Ipv4Packet{packet[8], packet.subspan(header_size)};
}

bool is_echo_request(int family, std::uint8_t type) {
    return family == AF_INET ? type == ICMP_ECHO : type == ICMP6_ECHO_REQUEST;
}

bool is_echo_reply(int family, std::uint8_t type) {
    return family == AF_INET ? type == ICMP_ECHOREPLY : type == ICMP6_ECHO_REPLY;
}

bool is_fatal_error(int family, std::uint8_t type, std::uint8_t code) {
    if (family == AF_INET)
        return (type == ICMP_DEST_UNREACH && code != ICMP_FRAG_NEEDED) || type == ICMP_TIME_EXCEEDED ||
            type == ICMP_PARAMETERPROB;
    return type == ICMP6_DST_UNREACH || type == ICMP6_TIME_EXCEEDED || type == ICMP6_PARAM_PROB;
}

namespace {

std::string describe_icmp4_error(std::uint8_t type, std::uint8_t code) {
    switch (type) {
        case ICMP_DEST_UNREACH:
            switch (code) {
                case ICMP_NET_UNREACH: return "Destination net unreachable";
                case ICMP_HOST_UNREACH: return "Destination host unreachable";
                case ICMP_PROT_UNREACH: return "Destination protocol unreachable";
                case ICMP_PORT_UNREACH: return "Destination port unreachable";
                case ICMP_FRAG_NEEDED: return "Fragmentation needed";
                case ICMP_SR_FAILED: return "Source route failed";
                case ICMP_NET_UNKNOWN: return "Destination net unknown";
                case ICMP_HOST_UNKNOWN: return "Destination host unknown";
                case ICMP_HOST_ISOLATED: return "Source host isolated";
                case ICMP_NET_ANO: return "Destination net prohibited";
                case ICMP_HOST_ANO: return "Destination host prohibited";
                case ICMP_NET_UNR_TOS: return "Destination net unreachable for type of service";
                case ICMP_HOST_UNR_TOS: return "Destination host unreachable for type of service";
                case ICMP_PKT_FILTERED: return "Packet filtered";
                case ICMP_PREC_VIOLATION: return "Precedence violation";
                case ICMP_PREC_CUTOFF: return "Precedence cutoff";
                default: return "Destination unreachable, code " + std::to_string(code);
            }
        case ICMP_TIME_EXCEEDED:
            return code == ICMP_EXC_FRAGTIME ? "Fragment reassembly time exceeded" : "Time to live exceeded";
        case ICMP_PARAMETERPROB: return "Parameter problem";
        default: return "ICMP type " + std::to_string(type) + ", code " + std::to_string(code);
    }
}

std::string describe_icmp6_error(std::uint8_t type, std::uint8_t code) {
    switch (type) {
        case ICMP6_DST_UNREACH:
            switch (code) {
                case ICMP6_DST_UNREACH_NOROUTE: return "Destination unreachable: No route";
                case ICMP6_DST_UNREACH_ADMIN: return "Destination unreachable: Administratively prohibited";
                case ICMP6_DST_UNREACH_BEYONDSCOPE: return "Destination unreachable: Beyond scope of source address";
                case ICMP6_DST_UNREACH_ADDR: return "Destination unreachable: Address unreachable";
                case ICMP6_DST_UNREACH_NOPORT: return "Destination unreachable: Port unreachable";
                case 5: return "Destination unreachable: Source address failed ingress/egress policy";
                case 6: return "Destination unreachable: Reject route to destination";
                default: return "Destination unreachable, code " + std::to_string(code);
            }
        case ICMP6_PACKET_TOO_BIG: return "Packet too big";
        case ICMP6_TIME_EXCEEDED:
            return code == ICMP6_TIME_EXCEED_REASSEMBLY ? "Time exceeded: Fragment reassembly"
                                                        : "Time exceeded: Hop limit";
        case ICMP6_PARAM_PROB: return "Parameter problem, code " + std::to_string(code);
        default: return "ICMPv6 type " + std::to_string(type) + ", code " + std::to_string(code);
    }
}

}  // namespace

std::string describe_icmp_error(int family, std::uint8_t type, std::uint8_t code) {
    return family == AF_INET ? describe_icmp4_error(type, code) : describe_icmp6_error(type, code);
}

}  // namespace labctl::ping
