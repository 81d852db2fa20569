// The pcapng writer byte by byte, and filters compiled by libpcap. No privileges needed.
#include <gtest/gtest.h>
#include <net/if_arp.h>  // not <linux/if_arp.h>: it clashes with <net/if.h> in a unity build

#include <cstring>
#include <string>
#include <vector>

#include "capture/capture.hpp"
#include "expect.hpp"

namespace labctl::capture {
namespace {

using Bytes = std::vector<std::uint8_t>;

std::uint32_t u32(const Bytes& b, std::size_t at) {
    std::uint32_t v;
    std::memcpy(&v, b.data() + at, 4);
    return v;
}
std::uint16_t u16(const Bytes& b, std::size_t at) {
    std::uint16_t v;
    std::memcpy(&v, b.data() + at, 2);
    return v;
}
std::uint64_t u64(const Bytes& b, std::size_t at) {
    std::uint64_t v;
    std::memcpy(&v, b.data() + at, 8);
    return v;
}
std::string text(const Bytes& b, std::size_t at, std::size_t n) {
    return std::string(reinterpret_cast<const char*>(b.data() + at), n);
}

struct Block {
    std::uint32_t type;
    Bytes body;
};

// Splits a stream into blocks, checking the framing every reader relies on: lengths
// that are multiples of 4, the same at both ends, and nothing left over.
std::vector<Block> split(const Bytes& b) {
    std::vector<Block> out;
    std::size_t at = 0;
    while (at < b.size()) {
        EXPECT_GE(b.size() - at, 12u);
        std::uint32_t length = u32(b, at + 4);
        EXPECT_EQ(length % 4, 0u);
        EXPECT_LE(at + length, b.size());
        if (length < 12 || at + length > b.size()) break;
        EXPECT_EQ(u32(b, at + length - 4), length);
        out.push_back(
            {u32(b, at), Bytes(b.begin() + static_cast<long>(at) + 8, b.begin() + static_cast<long>(at + length) - 4)});
        at += length;
    }
    EXPECT_EQ(at, b.size());
    return out;
}

// The options of a block body from `at`: (code, value) pairs up to opt_endofopt.
std::vector<std::pair<std::uint16_t, Bytes>> options(const Bytes& body, std::size_t at) {
    std::vector<std::pair<std::uint16_t, Bytes>> out;
    while (at + 4 <= body.size()) {
        std::uint16_t code = u16(body, at), length = u16(body, at + 2);
        if (code == 0) {
            EXPECT_EQ(length, 0);
            EXPECT_EQ(at + 4, body.size()) << "opt_endofopt ends the block";
            return out;
        }
        out.push_back(
            {code, Bytes(body.begin() + static_cast<long>(at) + 4, body.begin() + static_cast<long>(at) + 4 + length)});
        at += 4 + (length + 3u) / 4 * 4;
    }
    ADD_FAILURE() << "no opt_endofopt";
    return out;
}

TEST(Pcapng, SectionHeaderNamesTheApplicationAndAnUnknownLength) {
    Bytes b;
    pcapng::append_section_header(b, "labctl 1.2.3");
    auto blocks = split(b);
    ASSERT_EQ(blocks.size(), 1u);
    EXPECT_EQ(blocks[0].type, 0x0A0D0D0Au);
    const Bytes& body = blocks[0].body;
    EXPECT_EQ(u32(body, 0), 0x1A2B3C4Du);
    EXPECT_EQ(u16(body, 4), 1);  // version 1.0
    EXPECT_EQ(u16(body, 6), 0);
    EXPECT_EQ(u64(body, 8), ~std::uint64_t{0});
    auto opts = options(body, 16);
    ASSERT_EQ(opts.size(), 1u);
    EXPECT_EQ(opts[0].first, 4);  // shb_userappl
    EXPECT_EQ(text(opts[0].second, 0, opts[0].second.size()), "labctl 1.2.3");
    EXPECT_EQ(b.size(), 8 + 16 + 4 + 12 + 4 + 4u);
}

TEST(Pcapng, InterfaceBlockExactBytes) {
    Bytes b;
    pcapng::append_interface(b, kLinktypeEthernet, 262144, "h1:eth0", "");
    // type, length | linktype, reserved, snaplen | if_name (7 bytes, 1 of padding) |
    // if_tsresol = 9 (1 byte, 3 of padding) | opt_endofopt | length
    Bytes want;
    auto put32 = [&](std::uint32_t v) {
        want.insert(want.end(), reinterpret_cast<std::uint8_t*>(&v), reinterpret_cast<std::uint8_t*>(&v) + 4);
    };
    auto put16 = [&](std::uint16_t v) {
        want.insert(want.end(), reinterpret_cast<std::uint8_t*>(&v), reinterpret_cast<std::uint8_t*>(&v) + 2);
    };
    put32(1);
    put32(44);
    put16(1);
    put16(0);
    put32(262144);
    put16(2);
    put16(7);
    for (char c : std::string("h1:eth0")) want.push_back(static_cast<std::uint8_t>(c));
    want.push_back(0);
    put16(9);
    put16(1);
    want.insert(want.end(), {9, 0, 0, 0});
    put32(0);
    put32(44);
    EXPECT_EQ(b, want);
}

TEST(Pcapng, InterfaceBlockWithDescriptionAndRawLinktype) {
    Bytes b;
    pcapng::append_interface(b, kLinktypeRaw, 65535, "r1:tun0", "lab-r1 tun0");
    auto blocks = split(b);
    ASSERT_EQ(blocks.size(), 1u);
    EXPECT_EQ(u16(blocks[0].body, 0), 101);
    EXPECT_EQ(u32(blocks[0].body, 4), 65535u);
    auto opts = options(blocks[0].body, 8);
    ASSERT_EQ(opts.size(), 3u);
    EXPECT_EQ(opts[0].first, 2);
    EXPECT_EQ(text(opts[0].second, 0, 7), "r1:tun0");
    EXPECT_EQ(opts[1].first, 3);
    EXPECT_EQ(text(opts[1].second, 0, opts[1].second.size()), "lab-r1 tun0");
    EXPECT_EQ(opts[2], (std::pair<std::uint16_t, Bytes>{9, {9}}));
}

TEST(Pcapng, PacketBlockSplitsTheTimestampAndPadsTheData) {
    for (std::size_t n = 0; n <= 9; ++n) {
        Bytes data(n);
        for (std::size_t i = 0; i < n; ++i) data[i] = static_cast<std::uint8_t>(0xA0 + i);
        Bytes b;
        const std::uint64_t ts = 0x0000000700000009ull;  // high 7, low 9
        pcapng::append_packet(b, 3, ts, data, 1500, pcapng::Direction::unknown);
        auto blocks = split(b);
        ASSERT_EQ(blocks.size(), 1u) << n;
        const Bytes& body = blocks[0].body;
        EXPECT_EQ(blocks[0].type, 6u);
        EXPECT_EQ(u32(body, 0), 3u);
        EXPECT_EQ(u32(body, 4), 7u);
        EXPECT_EQ(u32(body, 8), 9u);
        EXPECT_EQ(u32(body, 12), n);
        EXPECT_EQ(u32(body, 16), 1500u);
        EXPECT_EQ(Bytes(body.begin() + 20, body.begin() + 20 + static_cast<long>(n)), data);
        // Padded to 4 with zeros, and no options without a direction.
        EXPECT_EQ(body.size(), 20 + (n + 3) / 4 * 4) << n;
        for (std::size_t i = 20 + n; i < body.size(); ++i) EXPECT_EQ(body[i], 0) << n;
    }
}

TEST(Pcapng, PacketBlockWritesTheDirectionAsEpbFlags) {
    const Bytes data{1, 2, 3};
    for (auto [direction, flags] : {std::pair{pcapng::Direction::inbound, 1u}, {pcapng::Direction::outbound, 2u}}) {
        Bytes b;
        pcapng::append_packet(b, 0, 1, data, 3, direction);
        auto blocks = split(b);
        ASSERT_EQ(blocks.size(), 1u);
        auto opts = options(blocks[0].body, 20 + 4);
        ASSERT_EQ(opts.size(), 1u);
        EXPECT_EQ(opts[0].first, 2);  // epb_flags
        ASSERT_EQ(opts[0].second.size(), 4u);
        EXPECT_EQ(u32(opts[0].second, 0), flags);
    }
}

TEST(Pcapng, StatisticsBlockCarriesTheCounts) {
    Bytes b;
    pcapng::append_statistics(b, 2, {0x100000005ull, 0x200000006ull, 40, 3, 37});
    auto blocks = split(b);
    ASSERT_EQ(blocks.size(), 1u);
    const Bytes& body = blocks[0].body;
    EXPECT_EQ(blocks[0].type, 5u);
    EXPECT_EQ(u32(body, 0), 2u);
    EXPECT_EQ(u32(body, 4), 2u);  // the block's timestamp is the end
    EXPECT_EQ(u32(body, 8), 6u);
    auto opts = options(body, 12);
    ASSERT_EQ(opts.size(), 5u);
    EXPECT_EQ(opts[0].first, 2);  // isb_starttime: high, low
    EXPECT_EQ(u32(opts[0].second, 0), 1u);
    EXPECT_EQ(u32(opts[0].second, 4), 5u);
    EXPECT_EQ(opts[1].first, 3);  // isb_endtime
    EXPECT_EQ(u32(opts[1].second, 4), 6u);
    EXPECT_EQ(opts[2].first, 4);  // isb_ifrecv
    EXPECT_EQ(u64(opts[2].second, 0), 40u);
    EXPECT_EQ(opts[3].first, 7);  // isb_osdrop
    EXPECT_EQ(u64(opts[3].second, 0), 3u);
    EXPECT_EQ(opts[4].first, 8);  // isb_usrdeliv
    EXPECT_EQ(u64(opts[4].second, 0), 37u);
}

TEST(Pcapng, AStreamOfBlocksSplitsBackWhole) {
    Bytes b;
    pcapng::append_section_header(b, "labctl");
    pcapng::append_interface(b, kLinktypeEthernet, kSnapLen, "a:b", "");
    pcapng::append_interface(b, kLinktypeRaw, kSnapLen, "c:tun0", "x");
    for (std::uint32_t i = 0; i < 20; ++i)
        pcapng::append_packet(b, i % 2, i, Bytes(i * 7 % 61, 0x55), 99, pcapng::Direction::inbound);
    pcapng::append_statistics(b, 0, {});
    auto blocks = split(b);
    ASSERT_EQ(blocks.size(), 1 + 2 + 20 + 1u);
    EXPECT_EQ(blocks.front().type, 0x0A0D0D0Au);
    EXPECT_EQ(blocks.back().type, 5u);
}

TEST(Filter, CompilesForEthernetAndRawIp) {
    auto eth = compile_filter("icmp or arp", kLinktypeEthernet);
    ASSERT_FALSE(eth.empty());
    EXPECT_EQ(BPF_CLASS(eth.back().code), BPF_RET);
    auto raw = compile_filter("icmp and host 10.0.0.1", kLinktypeRaw);
    ASSERT_FALSE(raw.empty());
    // Raw IP has no Ethernet header: the programs differ (no ethertype at offset 12).
    bool loads_ethertype = false;
    for (const auto& insn : raw) loads_ethertype |= insn.code == (BPF_LD | BPF_H | BPF_ABS) && insn.k == 12;
    EXPECT_FALSE(loads_ethertype);
}

TEST(Filter, ABadExpressionGivesLibpcapsMessage) {
    if (auto e = testing::expect_error<RequestError>([] { compile_filter("tcp port", kLinktypeEthernet); })) {
        EXPECT_NE(std::string(e->what()).find("filter \"tcp port\": "), std::string::npos) << e->what();
        EXPECT_NE(std::string(e->what()).find("syntax error"), std::string::npos) << e->what();
    }
    // Valid syntax that cannot apply to the link type is refused too.
    EXPECT_THROW(compile_filter("ether host 02:00:00:00:00:01", kLinktypeRaw), RequestError);
}

TEST(Filter, LinktypesOfDeviceTypes) {
    EXPECT_EQ(linktype_of_arphrd(ARPHRD_ETHER), kLinktypeEthernet);
    EXPECT_EQ(linktype_of_arphrd(ARPHRD_LOOPBACK), kLinktypeEthernet);
    EXPECT_EQ(linktype_of_arphrd(ARPHRD_NONE), kLinktypeRaw);
    EXPECT_EQ(linktype_of_arphrd(ARPHRD_IEEE80211_RADIOTAP), std::nullopt);
}

}  // namespace
}  // namespace labctl::capture
