// The pinger. PingIcmp* need no privileges; PingTest* run as root, each in network
// namespaces of its own (random names, removed in teardown even when the test fails).
// The witness `ip` commands build the wiring; traffic only ever goes to addresses inside
// these namespaces, and the root namespace gets no address or route.

#include <fcntl.h>
#include <netinet/icmp6.h>
#include <netinet/ip_icmp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "ping/icmp.hpp"
#include "ping/ping.hpp"

namespace labctl::ping {
namespace {

// Upper time bounds only tell "at once" from "after a timeout" and "concurrently" from
// "one after another"; they are generous so that a loaded CI machine never fails them.
// The counts (sent, received, refused) carry the real assertions.
constexpr double kLoadSlack = 10;

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// ---- pure: message encoding ----

TEST(PingIcmp, ChecksumOfRfc1071Example) {
    // RFC 1071 section 3: the sum of these words is ddf2, so the checksum is ~ddf2.
    const std::uint8_t data[] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
    EXPECT_EQ(internet_checksum(data), 0x220d);
    const std::uint8_t odd[] = {0x01};
    EXPECT_EQ(internet_checksum(odd), 0xfeff);
}

TEST(PingIcmp, EchoRequestIpv4CarriesIdSeqPayloadAndValidChecksum) {
    auto payload = echo_payload(0x0102030405060708ULL, 7, 3);
    auto m = encode_echo_request(AF_INET, 0xbeef, 3, payload);
    ASSERT_EQ(m.size(), kIcmpHeaderSize + kPayloadSize);
    EXPECT_EQ(m[0], ICMP_ECHO);
    EXPECT_EQ(internet_checksum(m), 0);  // a correct checksum sums to zero
    auto h = parse_icmp_header(m);
    ASSERT_TRUE(h);
    EXPECT_EQ(h->id, 0xbeef);
    EXPECT_EQ(h->seq, 3);
    EXPECT_EQ(m[8], 0x01);
    EXPECT_EQ(m[15], 0x08);
    EXPECT_EQ(m[19], 7);  // probe index, low byte
    EXPECT_EQ(m[21], 3);  // seq, low byte
}

TEST(PingIcmp, EchoRequestIpv6LeavesChecksumToKernel) {
    auto m = encode_echo_request(AF_INET6, 1, 2, echo_payload(1, 0, 2));
    EXPECT_EQ(m[0], ICMP6_ECHO_REQUEST);
    EXPECT_EQ(m[2], 0);
    EXPECT_EQ(m[3], 0);
}

TEST(PingIcmp, PayloadsDifferPerRunProbeAndSeq) {
    EXPECT_NE(echo_payload(1, 0, 1), echo_payload(2, 0, 1));
    EXPECT_NE(echo_payload(1, 0, 1), echo_payload(1, 1, 1));
    EXPECT_NE(echo_payload(1, 0, 1), echo_payload(1, 0, 2));
}

TEST(PingIcmp, ParsesIpv4HeaderOfRawRead) {
    std::vector<std::uint8_t> packet(24 + 8);
    packet[0] = 0x46;  // IPv4 with 4 bytes of options
    packet[8] = 61;
    packet[24] = ICMP_ECHOREPLY;
    auto p = parse_ipv4(packet);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->ttl, 61);
    EXPECT_EQ(p->payload.size(), 8u);
    EXPECT_EQ(p->payload[0], ICMP_ECHOREPLY);
    packet[0] = 0x4f;  // header longer than the packet
    EXPECT_FALSE(parse_ipv4(packet));
    EXPECT_FALSE(parse_ipv4(std::span<const std::uint8_t>(packet.data(), 10)));
}

TEST(PingIcmp, DescribesErrorsInPingWords) {
    EXPECT_EQ(describe_icmp_error(AF_INET, ICMP_DEST_UNREACH, ICMP_HOST_UNREACH), "Destination host unreachable");
    EXPECT_EQ(describe_icmp_error(AF_INET, ICMP_TIME_EXCEEDED, 0), "Time to live exceeded");
    EXPECT_EQ(describe_icmp_error(AF_INET6, ICMP6_DST_UNREACH, ICMP6_DST_UNREACH_ADDR),
              "Destination unreachable: Address unreachable");
    EXPECT_TRUE(is_fatal_error(AF_INET, ICMP_DEST_UNREACH, ICMP_NET_UNREACH));
    EXPECT_FALSE(is_fatal_error(AF_INET, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED));
    EXPECT_FALSE(is_fatal_error(AF_INET6, ICMP6_PACKET_TOO_BIG, 0));
}

TEST(PingIcmp, RttStatisticsAreZeroWithoutReplies) {
    ProbeResult r;
    EXPECT_EQ(r.rtt_min(), 0);
    EXPECT_EQ(r.rtt_avg(), 0);
    EXPECT_EQ(r.rtt_max(), 0);
    r.replies = {{1, 2.0, 64}, {2, 4.0, 64}, {3, 0.5, 64}};
    EXPECT_DOUBLE_EQ(r.rtt_min(), 0.5);
    EXPECT_DOUBLE_EQ(r.rtt_avg(), 6.5 / 3);
    EXPECT_DOUBLE_EQ(r.rtt_max(), 4.0);
}

TEST(PingIcmp, RejectsMalformedProbes) {
    Probe p;
    p.netns_fd = 0;
    EXPECT_THROW(run({p}), std::invalid_argument);  // no destination
    p.destination = *IpAddress::parse("10.0.0.1");
    p.count = 0;
    EXPECT_THROW(run({p}), std::invalid_argument);
    p.count = 1;
    p.netns_fd = -1;
    EXPECT_THROW(run({p}), std::invalid_argument);
    EXPECT_TRUE(run({}).empty());
}

// ---- privileged: real namespaces ----

int sh(const std::string& command) {
    int status = std::system(command.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string random_suffix() {
    static std::mt19937_64 random(std::random_device{}());
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(random()));
    return buf;
}

// One named namespace ("pt-<random>", as `ip netns add` makes it), lo up, removed by the
// destructor.
class TestNetns {
public:
    TestNetns() : name_("pt-" + random_suffix()) {
        if (sh("ip netns add " + name_) != 0) throw std::runtime_error("ip netns add " + name_ + " failed");
        created_ = true;
        fd_.reset(::open(("/run/netns/" + name_).c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd_) throw std::runtime_error("cannot open /run/netns/" + name_);
        ip("link set lo up");
    }
    ~TestNetns() {
        fd_.reset();
        if (!created_) return;
        // `ip netns del` can fail while another process works on /run/netns (EBUSY);
        // retry, then do what it does ourselves, so that no namespace outlives the test.
        const std::string path = "/run/netns/" + name_;
        for (int i = 0; i < 5 && ::access(path.c_str(), F_OK) == 0; ++i) {
            if (sh("ip netns del " + name_ + " 2>/dev/null") == 0) break;
            ::usleep(100000);
        }
        if (::access(path.c_str(), F_OK) == 0) {
            ::umount2(path.c_str(), MNT_DETACH);
            ::unlink(path.c_str());
        }
    }
    TestNetns(const TestNetns&) = delete;
    TestNetns& operator=(const TestNetns&) = delete;

    const std::string& name() const { return name_; }
    int fd() const { return fd_.get(); }
    // `ip -n <name> <args>`; throws when it fails.
    void ip(const std::string& args) const {
        if (sh("ip -n " + name_ + " " + args) != 0) throw std::runtime_error("ip -n " + name_ + " " + args + " failed");
    }
    void sysctl(const std::string& key_value) const {
        if (sh("ip netns exec " + name_ + " sysctl -q -w " + key_value) != 0)
            throw std::runtime_error("sysctl " + key_value + " in " + name_ + " failed");
    }

private:
    std::string name_;
    bool created_ = false;
    UniqueFd fd_;
};

// Kernel fact: a device that just came up drops what it is given (noop qdisc) until the
// link watcher, which may take up to a second, makes it operational.
void wait_operational(const TestNetns& ns, const std::string& ifname) {
    const auto give_up = Clock::now() + 5s;
    while (sh("ip -n " + ns.name() + " -o link show dev " + ifname + " | grep -q 'state UP'") != 0) {
        if (Clock::now() > give_up) throw std::runtime_error(ns.name() + ": " + ifname + " never became operational");
        std::this_thread::sleep_for(10ms);
    }
}

// Connects a:ifa and b:ifb with a veth pair created directly in the two namespaces, and
// waits until both ends are operational.
void veth(const TestNetns& a, const std::string& ifa, const TestNetns& b, const std::string& ifb) {
    a.ip("link add " + ifa + " type veth peer name " + ifb + " netns " + b.name());
    a.ip("link set " + ifa + " up");
    b.ip("link set " + ifb + " up");
    wait_operational(a, ifa);
    wait_operational(b, ifb);
}

IpAddress addr(const std::string& text) {
    auto a = IpAddress::parse(text);
    if (!a) throw std::invalid_argument("bad address " + text);
    return *a;
}

ino_t netns_inode_of_this_thread() {
    struct stat st {};
    ::stat("/proc/thread-self/ns/net", &st);
    return st.st_ino;
}

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// a (eth0: 10.0.0.1/24, fd00::1/64) <-veth-> b (eth0: 10.0.0.2/24, fd00::2/64).
class PingTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, raw sockets)";
        a_ = std::make_unique<TestNetns>();
        b_ = std::make_unique<TestNetns>();
        veth(*a_, "eth0", *b_, "eth0");
        a_->ip("addr add 10.0.0.1/24 dev eth0");
        a_->ip("addr add fd00::1/64 dev eth0 nodad");
        b_->ip("addr add 10.0.0.2/24 dev eth0");
        b_->ip("addr add fd00::2/64 dev eth0 nodad");
    }

    Probe probe_from_a(const std::string& destination) const {
        Probe p;
        p.netns_fd = a_->fd();
        p.destination = addr(destination);
        return p;
    }

    std::unique_ptr<TestNetns> a_;
    std::unique_ptr<TestNetns> b_;
};

TEST_F(PingTest, ReachableIpv4StopsAtFirstReply) {
    const auto start = Clock::now();
    auto results = run({probe_from_a("10.0.0.2")});
    ASSERT_EQ(results.size(), 1u);
    const auto& r = results[0];
    EXPECT_EQ(r.sent, 1);
    EXPECT_EQ(r.received, 1);
    EXPECT_FALSE(r.refused);
    EXPECT_EQ(r.reason, "");
    ASSERT_EQ(r.replies.size(), 1u);
    EXPECT_EQ(r.replies[0].seq, 1);
    EXPECT_EQ(r.replies[0].ttl, 64);
    EXPECT_GT(r.replies[0].rtt_ms, 0);
    EXPECT_LT(seconds_since(start), kLoadSlack * 0.1);  // no second request 100 ms later
}

TEST_F(PingTest, ReachableIpv6) {
    auto r = run({probe_from_a("fd00::2")})[0];
    EXPECT_EQ(r.received, 1) << r.reason;
    EXPECT_FALSE(r.refused);
    ASSERT_EQ(r.replies.size(), 1u);
    EXPECT_EQ(r.replies[0].ttl, 64);  // hop limit, from IPV6_HOPLIMIT
}

TEST_F(PingTest, AllRequestsWhenNotStoppingEndsWhenAllAnswered) {
    auto p = probe_from_a("10.0.0.2");
    p.count = 3;
    p.interval = 50ms;
    p.stop_at_first_reply = false;
    auto p6 = p;
    p6.destination = addr("fd00::2");
    const auto start = Clock::now();
    auto results = run({p, p6});
    const double elapsed = seconds_since(start);
    for (const auto& r : results) {
        EXPECT_EQ(r.sent, 3);
        EXPECT_EQ(r.received, 3);
        ASSERT_EQ(r.replies.size(), 3u);
        for (int i = 0; i < 3; ++i) EXPECT_EQ(r.replies[i].seq, i + 1);
        EXPECT_GT(r.rtt_min(), 0);
        EXPECT_LE(r.rtt_min(), r.rtt_avg());
        EXPECT_LE(r.rtt_avg(), r.rtt_max());
    }
    EXPECT_GE(elapsed, 0.1);               // requests are `interval` apart
    EXPECT_LT(elapsed, kLoadSlack * 0.5);  // and nobody waits for the timeout once all are answered
}

TEST_F(PingTest, SilentAddressOnSubnetGetsNoReply) {
    auto p = probe_from_a("10.0.0.99");
    p.timeout = 500ms;
    auto p6 = p;
    p6.destination = addr("fd00::99");
    const auto start = Clock::now();
    auto results = run({p, p6});
    const double elapsed = seconds_since(start);
    for (const auto& r : results) {
        EXPECT_EQ(r.sent, 3);
        EXPECT_EQ(r.received, 0);
        EXPECT_FALSE(r.refused);
        EXPECT_EQ(r.reason, "No reply");
    }
    EXPECT_GE(elapsed, 0.7);  // 2 intervals + the timeout after the last request
    EXPECT_LT(elapsed, kLoadSlack * 1.2);
}

TEST_F(PingTest, UnroutableIsRefusedAtOnce) {
    const auto start = Clock::now();
    auto results = run({probe_from_a("203.0.113.9"), probe_from_a("2001:db8::9")});
    EXPECT_LT(seconds_since(start), kLoadSlack * 0.05);
    for (const auto& r : results) {
        EXPECT_TRUE(r.refused);
        EXPECT_EQ(r.sent, 0);
        EXPECT_EQ(r.received, 0);
        EXPECT_EQ(r.reason, "Network is unreachable (ENETUNREACH)");
    }
}

TEST_F(PingTest, LocalRejectRoutesAreRefusedWithTheKernelsReason) {
    a_->ip("route add unreachable 198.51.100.0/25");
    a_->ip("route add prohibit 198.51.100.128/25");
    a_->ip("-6 route add unreachable fd00:7::/64");
    auto results = run({probe_from_a("198.51.100.1"), probe_from_a("198.51.100.129"), probe_from_a("fd00:7::1")});
    for (const auto& r : results) {
        EXPECT_TRUE(r.refused);
        EXPECT_EQ(r.sent, 0);
    }
    EXPECT_EQ(results[0].reason, "No route to host (EHOSTUNREACH)");
    EXPECT_EQ(results[1].reason, "Permission denied (EACCES)");
    EXPECT_EQ(results[2].reason, "No route to host (EHOSTUNREACH)");
}

TEST_F(PingTest, RoutingLoopEndsWithTimeExceeded) {
    // b and a third namespace c send 10.8.0.0/16 to each other until the TTL runs out.
    // (Not a and b: a drops packets that come back with its own source address.)
    TestNetns c;
    veth(*b_, "eth1", c, "eth0");
    b_->ip("addr add 10.0.1.1/24 dev eth1");
    c.ip("addr add 10.0.1.2/24 dev eth0");
    b_->sysctl("net.ipv4.ip_forward=1");
    c.sysctl("net.ipv4.ip_forward=1");
    a_->ip("route add 10.8.0.0/16 via 10.0.0.2");
    b_->ip("route add 10.8.0.0/16 via 10.0.1.2");
    c.ip("route add 10.8.0.0/16 via 10.0.1.1");
    c.ip("route add 10.0.0.0/24 via 10.0.1.1");
    const auto start = Clock::now();
    auto r = run({probe_from_a("10.8.0.1")})[0];
    EXPECT_LT(seconds_since(start), kLoadSlack * 0.5);
    EXPECT_TRUE(r.refused);
    EXPECT_EQ(r.sent, 1);
    EXPECT_TRUE(r.reason.starts_with("Time to live exceeded from 10.0.")) << r.reason;
}

TEST_F(PingTest, IcmpDestinationUnreachableEndsProbeAtOnce) {
    // b routes for 10.9.0.0/16 and fd00:9::/64 with "unreachable" routes: as a router it
    // answers with ICMP destination unreachable, which a reads from its error queue.
    b_->sysctl("net.ipv4.ip_forward=1");
    b_->sysctl("net.ipv6.conf.all.forwarding=1");
    b_->ip("route add unreachable 10.9.0.0/16");
    b_->ip("-6 route add unreachable fd00:9::/64");
    a_->ip("route add 10.9.0.0/16 via 10.0.0.2");
    a_->ip("-6 route add fd00:9::/64 via fd00::2");
    auto p = probe_from_a("10.9.0.1");
    auto p6 = probe_from_a("fd00:9::1");
    const auto start = Clock::now();
    auto results = run({p, p6});
    EXPECT_LT(seconds_since(start), kLoadSlack * 0.5);
    EXPECT_TRUE(results[0].refused);
    EXPECT_EQ(results[0].sent, 1);
    EXPECT_EQ(results[0].reason, "Destination host unreachable from 10.0.0.2");
    EXPECT_TRUE(results[1].refused);
    EXPECT_EQ(results[1].sent, 1);
    EXPECT_EQ(results[1].reason, "Destination unreachable: No route from fd00::2");
}

TEST_F(PingTest, BindToInterface) {
    // A third namespace c on a:eth1, with no addresses: bound to eth1, a's requests for b
    // can only go out of eth1, where nobody answers.
    TestNetns c;
    veth(*a_, "eth1", c, "eth0");
    auto via_eth0 = probe_from_a("10.0.0.2");
    via_eth0.bind_ifname = "eth0";
    auto via_eth1 = via_eth0;
    via_eth1.bind_ifname = "eth1";
    via_eth1.timeout = 300ms;
    auto via_missing = via_eth0;
    via_missing.bind_ifname = "nope0";
    auto v6_via_eth0 = probe_from_a("fd00::2");
    v6_via_eth0.bind_ifname = "eth0";
    auto results = run({via_eth0, via_eth1, via_missing, v6_via_eth0});
    EXPECT_EQ(results[0].received, 1) << results[0].reason;
    EXPECT_EQ(results[1].received, 0);
    EXPECT_TRUE(results[2].refused);
    EXPECT_EQ(results[2].sent, 0);
    EXPECT_EQ(results[2].reason, "nope0: No such device (ENODEV)");
    EXPECT_EQ(results[3].received, 1) << results[3].reason;
}

TEST_F(PingTest, GoingOnAfterErrorsLikePing) {
    auto p = probe_from_a("203.0.113.9");
    p.stop_on_error = false;
    p.stop_at_first_reply = false;
    p.count = 3;
    p.interval = 50ms;
    p.timeout = 100ms;
    auto r = run({p})[0];
    EXPECT_FALSE(r.refused);
    EXPECT_EQ(r.received, 0);
    EXPECT_EQ(r.reason, "Network is unreachable (ENETUNREACH)");
    // and a reachable destination is unaffected by the flag
    auto ok = probe_from_a("10.0.0.2");
    ok.stop_on_error = false;
    EXPECT_EQ(run({ok})[0].received, 1);
}

TEST_F(PingTest, LinkLocalNeedsTheInterface) {
    a_->ip("addr add fe80::1/64 dev eth0 nodad");
    b_->ip("addr add fe80::2/64 dev eth0 nodad");
    auto bound = probe_from_a("fe80::2");
    bound.bind_ifname = "eth0";
    bound.count = 10;             // neighbour discovery right after the addresses appear may drop the first
    auto results = run({bound});  // the scope of the destination is the bound interface
    EXPECT_EQ(results[0].received, 1) << results[0].reason;
}

TEST_F(PingTest, TwoFdsOfOneNamespaceShareItsIdentifiers) {
    UniqueFd again(::open(("/run/netns/" + a_->name()).c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(again);
    auto p = probe_from_a("10.0.0.2");
    p.count = 2;
    p.interval = 20ms;
    p.stop_at_first_reply = false;
    auto q = p;
    q.netns_fd = again.get();
    auto results = run({p, q, p, q});
    for (const auto& r : results) EXPECT_EQ(r.received, 2);
}

TEST_F(PingTest, OwnAddressesViaLo) {
    auto results =
        run({probe_from_a("10.0.0.1"), probe_from_a("fd00::1"), probe_from_a("127.0.0.1"), probe_from_a("::1")});
    for (const auto& r : results) {
        EXPECT_EQ(r.received, 1) << r.reason;
        EXPECT_FALSE(r.refused);
    }
}

TEST_F(PingTest, ProbesFromOneNamespaceDoNotMixReplies) {
    // Two probes to the same address, one to a silent address, one refused, one v6, all from
    // one namespace and so one socket per family: each gets exactly its own replies.
    std::vector<Probe> probes = {probe_from_a("10.0.0.2"),    probe_from_a("10.0.0.99"), probe_from_a("10.0.0.2"),
                                 probe_from_a("203.0.113.9"), probe_from_a("fd00::2"),   probe_from_a("fd00::99")};
    for (auto& p : probes) {
        p.count = 3;
        p.interval = 30ms;
        p.timeout = 200ms;
        p.stop_at_first_reply = false;
    }
    auto results = run(probes);
    EXPECT_EQ(results[0].received, 3);
    EXPECT_EQ(results[1].received, 0);
    EXPECT_EQ(results[1].sent, 3);
    EXPECT_EQ(results[2].received, 3);
    EXPECT_TRUE(results[3].refused);
    EXPECT_EQ(results[4].received, 3);
    EXPECT_EQ(results[5].received, 0);
    EXPECT_EQ(results[5].sent, 3);
    for (std::size_t i : {0u, 2u, 4u}) {
        ASSERT_EQ(results[i].replies.size(), 3u) << "probe " << i;  // a failure, not a crash
        for (int s = 0; s < 3; ++s) EXPECT_EQ(results[i].replies[s].seq, s + 1);
    }
}

TEST_F(PingTest, TwoThousandProbesInOneRound) {
    // b answers for whole ranges (AnyIP: local routes on lo) and silently drops others
    // (blackhole routes), so 2,000 destinations cost a single neighbour entry in a (the
    // neighbour table is shared by all namespaces).
    b_->ip("route add local 10.1.0.0/16 dev lo");
    b_->ip("-6 route add local fd00:1::/64 dev lo");
    b_->ip("route add blackhole 10.5.0.0/16");
    b_->ip("-6 route add blackhole fd00:5::/64");
    a_->ip("route add 10.1.0.0/16 via 10.0.0.2");
    a_->ip("-6 route add fd00:1::/64 via fd00::2");
    a_->ip("route add 10.5.0.0/16 via 10.0.0.2");
    a_->ip("-6 route add fd00:5::/64 via fd00::2");
    std::vector<Probe> probes;  // reachable v4, reachable v6, silent v4, silent v6, ...
    for (int i = 0; i < 500; ++i) {
        const std::string host = std::to_string(i / 200) + "." + std::to_string(i % 200 + 1);
        char suffix[16];
        std::snprintf(suffix, sizeof suffix, "::%x", i + 1);
        probes.push_back(probe_from_a("10.1." + host));
        probes.push_back(probe_from_a(std::string("fd00:1") + suffix));
        probes.push_back(probe_from_a("10.5." + host));
        probes.push_back(probe_from_a(std::string("fd00:5") + suffix));
    }
    const auto start = Clock::now();
    auto results = run(probes);
    const double elapsed = seconds_since(start);
    int reached = 0;
    int silent = 0;
    for (std::size_t i = 0; i < results.size(); ++i) {
        const auto& r = results[i];
        if (i % 4 < 2) reached += r.received == 1;
        else silent += r.received == 0 && r.sent == 3 && !r.refused;
    }
    EXPECT_EQ(reached, 1000);
    EXPECT_EQ(silent, 1000);
    // One round: a silent probe takes 2 x 100 ms + the 1 s timeout; 1,000 of them one after
    // another would take 20 minutes.
    EXPECT_GE(elapsed, 1.2);
    EXPECT_LT(elapsed, kLoadSlack * 2.5);
    std::printf("2000 probes: %.3f s\n", elapsed);
}

TEST_F(PingTest, ManyNamespacesAtOnce) {
    // 20 more namespaces on a bridge in b: each pings b, and b pings each of them, in one run.
    b_->ip("link add br0 type bridge");
    b_->ip("link set br0 up");
    std::vector<std::unique_ptr<TestNetns>> hosts;
    std::vector<Probe> probes;
    for (int i = 0; i < 20; ++i) {
        hosts.push_back(std::make_unique<TestNetns>());
        const std::string port = "p" + std::to_string(i);
        veth(*hosts.back(), "eth0", *b_, port);
        b_->ip("link set " + port + " master br0");
        hosts.back()->ip("addr add 10.2.0." + std::to_string(i + 10) + "/24 dev eth0");
    }
    b_->ip("addr add 10.2.0.1/24 dev br0");
    wait_operational(*b_, "br0");
    for (int i = 0; i < 20; ++i) {
        Probe p;
        p.netns_fd = hosts[i]->fd();
        p.destination = addr("10.2.0.1");
        probes.push_back(p);
        Probe back;
        back.netns_fd = b_->fd();
        back.destination = addr("10.2.0." + std::to_string(i + 10));
        probes.push_back(back);
    }
    auto results = run(probes);
    for (std::size_t i = 0; i < results.size(); ++i)
        EXPECT_EQ(results[i].received, 1) << "probe " << i << ": " << results[i].reason;
}

// Feeds `lines` to `ip [-n netns] -batch -`; throws when it fails.
void ip_batch(const std::string& netns, const std::vector<std::string>& lines) {
    std::string command = "ip " + (netns.empty() ? "" : "-n " + netns + " ") + "-batch -";
    FILE* pipe = ::popen(command.c_str(), "w");
    if (!pipe) throw std::runtime_error("popen " + command);
    for (const auto& line : lines) std::fprintf(pipe, "%s\n", line.c_str());
    if (::pclose(pipe) != 0) throw std::runtime_error(command + " failed");
}

std::size_t open_fd_count() {
    std::size_t n = 0;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
        (void)entry;
        ++n;
    }
    return n;
}

TEST_F(PingTest, AllPairsOfHundredNamespaces) {
    // 100 hosts, each on its own /24 to router b: all pairs is 9,900 probes from 100
    // namespaces, about 200 sockets, in one run. (Through a router rather than one bridge so
    // the neighbour table, shared by all namespaces, holds ~200 entries, not 9,900.)
    constexpr int kHosts = 100;
    b_->sysctl("net.ipv4.ip_forward=1");
    std::vector<std::unique_ptr<TestNetns>> hosts;
    std::vector<std::string> router;
    for (int i = 0; i < kHosts; ++i) {
        hosts.push_back(std::make_unique<TestNetns>());
        const std::string net = "10.3." + std::to_string(i) + ".";
        router.push_back("link add h" + std::to_string(i) + " type veth peer name eth0 netns " + hosts.back()->name());
        router.push_back("link set h" + std::to_string(i) + " up");
        router.push_back("addr add " + net + "1/24 dev h" + std::to_string(i));
    }
    ip_batch(b_->name(), router);
    for (int i = 0; i < kHosts; ++i) {
        const std::string net = "10.3." + std::to_string(i) + ".";
        ip_batch(hosts[i]->name(),
                 {"link set eth0 up", "addr add " + net + "2/24 dev eth0", "route add default via " + net + "1"});
    }
    for (int i = 0; i < kHosts; ++i) {
        wait_operational(*hosts[i], "eth0");
        wait_operational(*b_, "h" + std::to_string(i));
    }
    std::vector<Probe> probes;
    for (int i = 0; i < kHosts; ++i)
        for (int j = 0; j < kHosts; ++j) {
            if (i == j) continue;
            Probe p;
            p.netns_fd = hosts[i]->fd();
            p.destination = addr("10.3." + std::to_string(j) + ".2");
            probes.push_back(p);
        }
    const std::size_t fds_before = open_fd_count();
    const auto start = Clock::now();
    auto results = run(probes);
    const double elapsed = seconds_since(start);
    EXPECT_EQ(open_fd_count(), fds_before);  // every socket closed again
    int reached = 0;
    int retried = 0;
    double worst_rtt = 0;
    for (const auto& r : results) {
        reached += r.received == 1;
        retried += r.sent > 1;
        worst_rtt = std::max(worst_rtt, r.rtt_max());
    }
    EXPECT_EQ(reached, kHosts * (kHosts - 1));
    for (const auto& r : results)
        if (r.received == 1) {
            EXPECT_EQ(r.replies[0].ttl, 63);  // one router on the way back
        }
    // About one round of a single probe (3 requests 100 ms apart + 1 s), though the kernel's
    // own forwarding work for ~40,000 packets runs on the same CPUs.
    EXPECT_LT(elapsed, kLoadSlack * 2.5);
    std::printf(
        "%zu probes from %d namespaces: %.3f s, worst rtt %.1f ms, %d needed a second "
        "request\n",
        probes.size(), kHosts, elapsed, worst_rtt, retried);
}

TEST_F(PingTest, ReplyCallbackRunsOnCallingThread) {
    auto p = probe_from_a("10.0.0.2");
    p.count = 3;
    p.interval = 20ms;
    p.stop_at_first_reply = false;
    auto p6 = p;
    p6.destination = addr("fd00::2");
    const auto caller = std::this_thread::get_id();
    const ino_t netns_before = netns_inode_of_this_thread();
    std::vector<std::pair<std::size_t, int>> seen;
    auto results = run({p, p6}, [&](std::size_t index, const Reply& reply) {
        EXPECT_EQ(std::this_thread::get_id(), caller);
        EXPECT_GT(reply.rtt_ms, 0);
        seen.emplace_back(index, reply.seq);
    });
    EXPECT_EQ(seen.size(), 6u);
    for (std::size_t i : {0u, 1u}) {
        int n = 0;
        for (auto& [index, seq] : seen) n += index == i;
        EXPECT_EQ(n, 3);
    }
    EXPECT_EQ(netns_inode_of_this_thread(), netns_before);  // never left its namespace
}

TEST_F(PingTest, FailedNeighbourResolutionEndsProbe) {
    // With one ARP/ND probe of 50 ms, a's own kernel gives up on 10.0.0.99 and fd00::99 fast
    // and sends itself ICMP destination unreachable, which ends the probe, bound or not.
    a_->sysctl("net.ipv4.neigh.eth0.mcast_solicit=1");
    a_->sysctl("net.ipv4.neigh.eth0.retrans_time_ms=50");
    a_->sysctl("net.ipv6.neigh.eth0.mcast_solicit=1");
    a_->sysctl("net.ipv6.neigh.eth0.retrans_time_ms=50");
    std::vector<Probe> probes = {probe_from_a("10.0.0.99"), probe_from_a("fd00::99"), probe_from_a("10.0.0.98"),
                                 probe_from_a("fd00::98")};
    probes[2].bind_ifname = "eth0";
    probes[3].bind_ifname = "eth0";
    for (auto& p : probes) p.count = 10;
    const auto start = Clock::now();
    auto results = run(probes);
    EXPECT_LT(seconds_since(start), kLoadSlack * 0.9);
    for (std::size_t i = 0; i < results.size(); ++i) {
        EXPECT_TRUE(results[i].refused) << i << ": " << results[i].reason;
        EXPECT_EQ(results[i].received, 0);
    }
    EXPECT_EQ(results[0].reason, "Destination host unreachable from 10.0.0.1");
    EXPECT_EQ(results[1].reason, "Destination unreachable: Address unreachable from fd00::1");
    EXPECT_EQ(results[2].reason, "Destination host unreachable from 10.0.0.1");
    EXPECT_EQ(results[3].reason, "Destination unreachable: Address unreachable from fd00::1");
}

TEST_F(PingTest, ThrowingCallbackAbandonsRunAndClosesSockets) {
    auto p = probe_from_a("10.0.0.2");
    auto p6 = probe_from_a("fd00::2");
    p6.bind_ifname = "eth0";
    const std::size_t fds_before = open_fd_count();
    EXPECT_THROW(run({p, p6}, [](std::size_t, const Reply&) { throw std::runtime_error("x"); }), std::runtime_error);
    EXPECT_EQ(open_fd_count(), fds_before);
}

TEST_F(PingTest, BadNamespaceFdThrowsKernelError) {
    auto p = probe_from_a("10.0.0.2");
    UniqueFd not_a_netns(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    p.netns_fd = not_a_netns.get();
    EXPECT_THROW(run({p}), KernelError);
}

}  // namespace
}  // namespace labctl::ping
