// Bounding what verify, down and apply hold at once: chunks and probe waves (issue 20).

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <utility>
#include <vector>

#include "engine/chunks.hpp"

namespace labctl {
namespace {

using engine::detail::for_each_chunk;
using engine::detail::probe_waves;
using engine::detail::ProbeCost;
using Ends = std::vector<std::size_t>;

std::vector<std::pair<std::size_t, std::size_t>> chunks(std::size_t n, std::size_t size) {
    std::vector<std::pair<std::size_t, std::size_t>> out;
    for_each_chunk(n, size, [&](std::size_t first, std::size_t last) { out.emplace_back(first, last); });
    return out;
}

TEST(ChunksTest, ChunksCoverEverythingInOrder) {
    using Chunks = std::vector<std::pair<std::size_t, std::size_t>>;
    EXPECT_EQ(chunks(0, 4), Chunks{});
    EXPECT_EQ(chunks(5, 2), (Chunks{{0, 2}, {2, 4}, {4, 5}}));
    EXPECT_EQ(chunks(4, 2), (Chunks{{0, 2}, {2, 4}}));
    EXPECT_EQ(chunks(3, 10), (Chunks{{0, 3}}));
    EXPECT_EQ(chunks(2, 0), (Chunks{{0, 1}, {1, 2}}));
}

TEST(ChunksTest, NamespacesAtOnceIsBounded) {
    const std::size_t n = engine::detail::namespaces_at_once();
    EXPECT_GE(n, 16u);
    EXPECT_LE(n, 512u);
}

ProbeCost icmp(std::size_t source, int family = AF_INET, std::string ifname = "") {
    return {source, family, std::move(ifname), false};
}
ProbeCost tcp(std::size_t source) { return {source, AF_INET, "", true}; }

TEST(ChunksTest, EverythingThatFitsIsOneWave) {
    EXPECT_EQ(probe_waves({}, 8, 8), Ends{});
    EXPECT_EQ(probe_waves({icmp(0), icmp(1), icmp(0)}, 8, 8), Ends{3});
}

TEST(ChunksTest, WavesHoldAtMostTheirSourcesNamespacesAndSockets) {
    // A new source costs its namespace and an ICMP socket: two sources per wave of 4 fds.
    std::vector<ProbeCost> p;
    for (std::size_t i = 0; i < 10; ++i) p.push_back(icmp(i));
    EXPECT_EQ(probe_waves(p, 4, 100), (Ends{2, 4, 6, 8, 10}));
    EXPECT_EQ(probe_waves(p, 5, 100), (Ends{2, 4, 6, 8, 10}));
    // More probes from a source already in the wave cost nothing more.
    EXPECT_EQ(probe_waves({icmp(0), icmp(0), icmp(0), icmp(1), icmp(1)}, 2, 100), (Ends{3, 5}));
    // Another family is another socket; so is a bind interface (besides the unbound one).
    EXPECT_EQ(probe_waves({icmp(0), icmp(0, AF_INET6), icmp(1)}, 3, 100), (Ends{2, 3}));
    EXPECT_EQ(probe_waves({icmp(0, AF_INET, "eth0"), icmp(0), icmp(0, AF_INET, "eth1")}, 3, 100), (Ends{2, 3}));
}

TEST(ChunksTest, TcpProbesCostASocketEach) {
    EXPECT_EQ(probe_waves({tcp(0), tcp(0), tcp(0), tcp(0)}, 3, 100), (Ends{2, 4}));
    EXPECT_EQ(probe_waves({tcp(0), icmp(0), tcp(0)}, 3, 100), (Ends{2, 3}));
}

TEST(ChunksTest, WavesHoldAtMostMaxProbes) {
    EXPECT_EQ(probe_waves({icmp(0), icmp(0), icmp(0), icmp(0), icmp(0)}, 100, 2), (Ends{2, 4, 5}));
}

TEST(ChunksTest, AProbeBeyondTheBudgetStillRunsAlone) {
    EXPECT_EQ(probe_waves({icmp(0, AF_INET, "eth0"), icmp(1, AF_INET, "eth0")}, 1, 100), (Ends{1, 2}));
}

}  // namespace
}  // namespace labctl
