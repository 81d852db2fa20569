#include "nl/nl.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <net/if.h>

#include <chrono>
#include <cstring>

#include <gtest/gtest.h>

#include "base/error.hpp"
#include "priv_support.hpp"
#include "expect.hpp"

namespace labctl {
namespace {

using testing::expect_kernel_error;
using testing::TestNamespaces;

TEST(NlMessage, HeaderAttributesAndNestsEncode) {
    nl::Message m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    m.header<ifinfomsg>().ifi_index = 7;
    m.put_strz(IFLA_IFNAME, "eth0");
    m.put_u32(IFLA_MTU, 9000);
    {
        auto linkinfo = m.nest(IFLA_LINKINFO);
        m.put_strz(IFLA_INFO_KIND, "veth");
    }
    const nlmsghdr* h = m.hdr();
    EXPECT_EQ(h->nlmsg_type, RTM_NEWLINK);
    EXPECT_EQ(h->nlmsg_flags, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL);
    EXPECT_EQ(h->nlmsg_len, m.size());
    EXPECT_EQ(static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(h))->ifi_index, 7);
    auto tb = nl::parse_attrs(h, sizeof(ifinfomsg), IFLA_MAX);
    ASSERT_TRUE(tb[IFLA_IFNAME]);
    EXPECT_STREQ(mnl_attr_get_str(tb[IFLA_IFNAME]), "eth0");
    EXPECT_EQ(mnl_attr_get_payload_len(tb[IFLA_IFNAME]), 5);  // NUL included
    EXPECT_EQ(mnl_attr_get_u32(tb[IFLA_MTU]), 9000u);
    ASSERT_TRUE(tb[IFLA_LINKINFO]);
    EXPECT_TRUE(tb[IFLA_LINKINFO]->nla_type & NLA_F_NESTED);
    auto info = nl::parse_nested(tb[IFLA_LINKINFO], IFLA_INFO_MAX);
    ASSERT_TRUE(info[IFLA_INFO_KIND]);
    EXPECT_STREQ(mnl_attr_get_str(info[IFLA_INFO_KIND]), "veth");
}

TEST(NlMessage, GrowsWithoutBreakingOpenNests) {
    nl::Message m(RTM_NEWLINK, 0);
    m.header<ifinfomsg>();
    std::vector<std::uint8_t> big(20000, 0xab);
    {
        auto outer = m.nest(IFLA_AF_SPEC);
        m.put_u8(1, 1);
        m.put_bytes(2, big.data(), big.size());  // forces reallocation while the nest is open
        auto inner = m.nest(3);
        m.put_u16(4, 0x1234);
        inner.end();
        m.put_flag(5);
    }
    auto tb = nl::parse_attrs(m.hdr(), sizeof(ifinfomsg), IFLA_MAX);
    ASSERT_TRUE(tb[IFLA_AF_SPEC]);
    EXPECT_EQ(mnl_attr_get_len(tb[IFLA_AF_SPEC]), m.size() - NLMSG_HDRLEN - NLMSG_ALIGN(sizeof(ifinfomsg)));
    auto in = nl::parse_nested(tb[IFLA_AF_SPEC], 5);
    ASSERT_TRUE(in[2] && in[3] && in[5]);
    EXPECT_EQ(mnl_attr_get_payload_len(in[2]), big.size());
    EXPECT_EQ(mnl_attr_get_payload_len(in[5]), 0);
    auto deeper = nl::parse_nested(in[3], 4);
    ASSERT_TRUE(deeper[4]);
    EXPECT_EQ(mnl_attr_get_u16(deeper[4]), 0x1234);
}

TEST(NlMessage, NestPlainHasNoNestedFlagAndRawHeader) {
    nl::Message m(RTM_NEWLINK, 0);
    m.header<ifinfomsg>();
    {
        auto peer = m.nest_plain(1);
        ifinfomsg ifi{};
        ifi.ifi_index = 42;
        m.put_raw(&ifi, sizeof ifi);
        m.put_strz(IFLA_IFNAME, "p");
    }
    auto tb = nl::parse_attrs(m.hdr(), sizeof(ifinfomsg), 1);
    ASSERT_TRUE(tb[1]);
    EXPECT_EQ(tb[1]->nla_type, 1);
    const auto* ifi = static_cast<const ifinfomsg*>(mnl_attr_get_payload(tb[1]));
    EXPECT_EQ(ifi->ifi_index, 42);
    const auto* name =
        reinterpret_cast<const nlattr*>(reinterpret_cast<const char*>(ifi) + NLMSG_ALIGN(sizeof(ifinfomsg)));
    EXPECT_EQ(mnl_attr_get_type(name), IFLA_IFNAME);
    EXPECT_STREQ(mnl_attr_get_str(name), "p");
}

TEST(NlMessage, FamilyHeaderAfterAttributesIsALogicError) {
    nl::Message m(RTM_NEWADDR, 0);
    m.put_u32(1, 1);
    EXPECT_THROW(m.header<ifaddrmsg>(), std::logic_error);
}

TEST(NlFaults, ParsesSpec) {
    auto f = nl::parse_fault_spec("EEXIST,EBUSY:0.05:42");
    ASSERT_TRUE(f);
    EXPECT_EQ(f->errnos, (std::vector<int>{EEXIST, EBUSY}));
    EXPECT_DOUBLE_EQ(f->fraction, 0.05);
    EXPECT_EQ(f->seed, 42u);
    EXPECT_TRUE(nl::parse_fault_spec("17:1"));
    EXPECT_FALSE(nl::parse_fault_spec("ENOTANERRNO:0.1:1"));
    EXPECT_FALSE(nl::parse_fault_spec("EEXIST"));
    EXPECT_FALSE(nl::parse_fault_spec("EEXIST:2"));
    auto d = nl::parse_fault_spec("DUMP_INTR:0.5:9");
    ASSERT_TRUE(d);
    EXPECT_TRUE(d->dump_intr);
    EXPECT_TRUE(d->errnos.empty());
    auto both = nl::parse_fault_spec("ENOBUFS,DUMP_INTR:0.1");
    ASSERT_TRUE(both);
    EXPECT_TRUE(both->dump_intr);
    EXPECT_EQ(both->errnos, std::vector<int>{ENOBUFS});
    EXPECT_FALSE(f->dump_intr);
}

// Requests used below, against a test namespace's lo (ifindex 1 in every new namespace).
nl::Message lo_up() {
    nl::Message m(RTM_NEWLINK, 0);
    auto& ifi = m.header<ifinfomsg>();
    ifi.ifi_index = 1;
    ifi.ifi_flags = IFF_UP;
    ifi.ifi_change = IFF_UP;
    return m;
}

nl::Message add_v4(int ifindex, std::uint32_t host_order, int plen) {
    nl::Message m(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
    auto& ifa = m.header<ifaddrmsg>();
    ifa.ifa_family = AF_INET;
    ifa.ifa_prefixlen = static_cast<unsigned char>(plen);
    ifa.ifa_index = static_cast<unsigned>(ifindex);
    const std::uint32_t a = htonl(host_order);
    m.put_bytes(IFA_LOCAL, &a, 4);
    m.put_bytes(IFA_ADDRESS, &a, 4);
    return m;
}

std::size_t count_v4(nl::Socket& s) {
    std::size_t n = 0;
    nl::Message d(RTM_GETADDR, 0);
    d.header<ifaddrmsg>().ifa_family = AF_INET;
    nl::dump(
        s, d, [&](const nlmsghdr* h) { n += h->nlmsg_type == RTM_NEWADDR; }, "dumping addresses");
    return n;
}

TEST(NlSocket, OpensInTheCallingThreadsNamespace) {
    LABCTL_REQUIRE_ROOT();
    TestNamespaces t;
    auto ns = t.make();
    auto sock = netns::run_in(ns, [] { return nl::Socket::open_route(); });
    EXPECT_GE(sock.fd(), 0);
    EXPECT_NE(sock.portid(), 0u);
    EXPECT_TRUE(::fcntl(sock.fd(), F_GETFD) & FD_CLOEXEC);
    // The namespace has only lo; the dump sees exactly one link.
    int links = 0;
    nl::Message d(RTM_GETLINK, 0);
    d.header<ifinfomsg>();
    nl::dump(
        sock, d, [&](const nlmsghdr*) { ++links; }, "dumping links");
    EXPECT_EQ(links, 1);
}

TEST(NlBatch, OneFailureKeepsContextAndExtackOthersApplied) {
    LABCTL_REQUIRE_ROOT();
    TestNamespaces t;
    auto ns = t.make();
    auto sock = netns::run_in(ns, [] { return nl::Socket::open_route(); });
    nl::Batch b;
    b.add(lo_up(), "lo: setting up");
    b.add(add_v4(1, 0x0a000001, 33), "lo: adding 10.0.0.1/33");  // invalid prefix length
    b.add(add_v4(1, 0x0a000002, 32), "lo: adding 10.0.0.2/32");
    auto results = b.run(sock);
    ASSERT_EQ(results.size(), 3u);
    EXPECT_EQ(results[0].error, 0);
    EXPECT_EQ(results[1].error, EINVAL);
    EXPECT_EQ(results[1].context, "lo: adding 10.0.0.1/33");
    EXPECT_FALSE(results[1].kernel_message.empty());
    EXPECT_EQ(results[2].error, 0);
    EXPECT_EQ(count_v4(sock), 2u);  // 127.0.0.1 (lo up) and 10.0.0.2

    {
        // The first failure: lo up succeeds again, the /33 is the first to fail.
        auto e = expect_kernel_error([&] { b.run_or_throw(sock); }, EINVAL);
        EXPECT_EQ(e.context(), "lo: adding 10.0.0.1/33");
        EXPECT_NE(std::string(e.what()).find("Invalid argument (EINVAL): "), std::string::npos) << e.what();
        std::cout << "[ message ] " << e.what() << "\n";
    }
    // Now 10.0.0.2 exists: EEXIST through request().
    auto dup = add_v4(1, 0x0a000002, 32);
    {
        auto e = expect_kernel_error([&] { nl::request(sock, dup, "lo: adding 10.0.0.2/32"); }, EEXIST);
        EXPECT_STREQ(e.what(),
                     ("lo: adding 10.0.0.2/32: File exists (EEXIST)" +
                      (e.kernel_message().empty() ? "" : ": " + e.kernel_message()))
                         .c_str());
    }
}

TEST(NlBatch, ThousandsOfRequestsSpanSeveralBuffers) {
    LABCTL_REQUIRE_ROOT();
    TestNamespaces t;
    auto ns = t.make();
    auto sock = netns::run_in(ns, [] { return nl::Socket::open_route(); });
    nl::Batch b;
    b.add(lo_up(), "lo up");
    constexpr int kCount = 3000;  // ~64 bytes each: about 6 buffers of 32 KiB
    for (int i = 0; i < kCount; ++i) b.add(add_v4(1, 0x0a100000 + i, 32), "addr " + std::to_string(i));
    auto results = b.run(sock);
    for (const auto& r : results) ASSERT_EQ(r.error, 0) << r.context << ": " << r.kernel_message;
    EXPECT_EQ(count_v4(sock), kCount + 1u);
}

TEST(NlFaults, InjectedFailuresAreNotSent) {
    LABCTL_REQUIRE_ROOT();
    TestNamespaces t;
    auto ns = t.make();
    auto sock = netns::run_in(ns, [] { return nl::Socket::open_route(); });
    nl::set_fault_injection(nl::FaultInjection{0.5, {EEXIST}, 7});  // final: never retried
    nl::Batch b;
    for (int i = 0; i < 200; ++i) b.add(add_v4(1, 0x0a200000 + i, 32), "addr " + std::to_string(i));
    auto results = b.run(sock);
    nl::set_fault_injection(std::nullopt);
    std::size_t failed = 0;
    for (const auto& r : results) {
        if (r.error) {
            EXPECT_EQ(r.error, EEXIST);
            EXPECT_EQ(r.kernel_message, "injected fault");
            ++failed;
        }
    }
    EXPECT_GT(failed, 50u);
    EXPECT_LT(failed, 150u);
    EXPECT_EQ(count_v4(sock), 200 - failed);
}

// Transient errors (EBUSY, ENOBUFS) are retried a bounded number of times: at a
// fault rate of 0.5, four attempts leave about 1/16 of the requests failed, and every
// request that finally succeeded was applied exactly once.
TEST(NlFaults, TransientErrorsAreRetriedWithBounds) {
    LABCTL_REQUIRE_ROOT();
    TestNamespaces t;
    auto ns = t.make();
    auto sock = netns::run_in(ns, [] { return nl::Socket::open_route(); });
    nl::set_fault_injection(nl::FaultInjection{0.5, {EBUSY, ENOBUFS}, 11});
    nl::Batch b;
    for (int i = 0; i < 400; ++i) b.add(add_v4(1, 0x0a210000 + i, 32), "addr " + std::to_string(i));
    const auto batch_retries_before = nl::request_retries();
    auto results = b.run(sock);
    const auto batch_retries = nl::request_retries() - batch_retries_before;
    nl::set_fault_injection(std::nullopt);
    std::size_t failed = 0;
    for (const auto& r : results) {
        if (r.error) {
            EXPECT_TRUE(r.error == EBUSY || r.error == ENOBUFS) << r.error;
            ++failed;
        }
    }
    EXPECT_GT(failed, 5u);   // bounded: not retried forever
    EXPECT_LT(failed, 60u);  // but retried: without retries about 200 fail
    EXPECT_EQ(count_v4(sock), 400 - failed);
    // Every request that failed in the end was sent 4 times; none more than 4.
    EXPECT_GE(batch_retries, 3 * failed);
    EXPECT_LE(batch_retries, 3u * 400u);

    // A request that always fails transiently: exactly 4 attempts, with at least
    // 10 + 20 + 40 ms between them (a lower bound: a loaded machine only adds).
    nl::set_fault_injection(nl::FaultInjection{1.0, {EBUSY}, 3});
    auto retries_before = nl::request_retries();
    auto one_start = std::chrono::steady_clock::now();
    EXPECT_THROW(
        {
            auto m = add_v4(1, 0x0a22ff00, 32);
            nl::request(sock, m, "one");
        },
        KernelError);
    EXPECT_EQ(nl::request_retries() - retries_before, 3u);
    EXPECT_GE(std::chrono::steady_clock::now() - one_start, std::chrono::milliseconds(70));
    // The same in a batch: each always-failing request is sent 4 times in all.
    retries_before = nl::request_retries();
    one_start = std::chrono::steady_clock::now();
    {
        nl::Batch two;
        two.add(add_v4(1, 0x0a22ff01, 32), "two a");
        two.add(add_v4(1, 0x0a22ff02, 32), "two b");
        for (const auto& r : two.run(sock)) EXPECT_EQ(r.error, EBUSY) << r.context;
    }
    EXPECT_EQ(nl::request_retries() - retries_before, 6u);
    EXPECT_GE(std::chrono::steady_clock::now() - one_start, std::chrono::milliseconds(70));
    nl::set_fault_injection(nl::FaultInjection{0.5, {EBUSY}, 5});
    std::size_t thrown = 0;
    for (int i = 0; i < 100; ++i) {
        auto m = add_v4(1, 0x0a230000 + i, 32);
        try {
            nl::request(sock, m, "addr");
        } catch (const KernelError& e) {
            EXPECT_EQ(e.errno_value(), EBUSY);
            ++thrown;
        }
    }
    nl::set_fault_injection(std::nullopt);
    EXPECT_LT(thrown, 25u);
    EXPECT_EQ(count_v4(sock), 400 - failed + 100 - thrown);
}

// A dump flagged NLM_F_DUMP_INTR (the table changed while the kernel walked it) is
// thrown away and restarted: the caller sees one consistent answer, never parts of two.
// Flagging every answer exhausts the bounded restarts.
TEST(NlFaults, InterruptedDumpsAreRestartedAndBounded) {
    LABCTL_REQUIRE_ROOT();
    TestNamespaces t;
    auto ns = t.make();
    auto sock = netns::run_in(ns, [] { return nl::Socket::open_route(); });
    nl::Batch b;
    b.add(lo_up(), "lo up");
    constexpr int kCount = 100;  // one or two parts per answer
    for (int i = 0; i < kCount; ++i) b.add(add_v4(1, 0x0a240000 + i, 32), "addr " + std::to_string(i));
    for (const auto& r : b.run(sock)) ASSERT_EQ(r.error, 0) << r.context;

    const auto before = nl::dump_restarts();
    // Each datagram of an answer is flagged with probability 0.1; an answer spans a few.
    nl::set_fault_injection(nl::FaultInjection{0.1, {}, 21, true});
    for (int round = 0; round < 50; ++round) EXPECT_EQ(count_v4(sock), kCount + 1u) << round;
    nl::set_fault_injection(std::nullopt);
    EXPECT_GT(nl::dump_restarts() - before, 3u);

    nl::set_fault_injection(nl::FaultInjection{1.0, {}, 22, true});
    const auto restarts_before = nl::dump_restarts();
    try {
        count_v4(sock);
        ADD_FAILURE() << "a dump that is always interrupted must fail";
    } catch (const KernelError& e) {
        EXPECT_EQ(e.errno_value(), EAGAIN);
        EXPECT_NE(std::string(e.what()).find("dump kept changing"), std::string::npos) << e.what();
    }
    EXPECT_EQ(nl::dump_restarts() - restarts_before, 10u);  // 10 attempts, every one interrupted
    nl::set_fault_injection(std::nullopt);
    EXPECT_EQ(count_v4(sock), kCount + 1u);  // requests are not touched by DUMP_INTR alone
}

}  // namespace
}  // namespace labctl

namespace labctl {
namespace {

// Acks that do not fit the receive buffer are dropped by the kernel; the batch must
// report those requests as unknown (ENOBUFS), never hang, and get the rest right.
TEST(NlBatch, LostAcksAreReportedNotWaitedFor) {
    LABCTL_REQUIRE_ROOT();
    TestNamespaces t;
    auto ns = t.make();
    auto sock = netns::run_in(ns, [] { return nl::Socket::open_route(); });
    const int tiny = 1;  // the kernel rounds it up to its minimum (a few KiB)
    ASSERT_EQ(::setsockopt(sock.fd(), SOL_SOCKET, SO_RCVBUFFORCE, &tiny, sizeof tiny), 0);
    nl::Batch b;
    for (int i = 0; i < 300; ++i) b.add(add_v4(1, 0x0a300000 + i, 32), "addr " + std::to_string(i));
    const auto start = std::chrono::steady_clock::now();
    auto results = b.run(sock);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
    std::size_t ok = 0, lost = 0;
    for (const auto& r : results) {
        if (r.error == 0) ++ok;
        else if (r.error == ENOBUFS) ++lost;
        else ADD_FAILURE() << r.context << ": " << r.error;
    }
    EXPECT_GT(lost, 0u);
    EXPECT_EQ(ok + lost, 300u);
    // The requests themselves were all applied; only their acks were lost.
    const int big = 1 << 20;
    ASSERT_EQ(::setsockopt(sock.fd(), SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big), 0);
    EXPECT_EQ(count_v4(sock), 300u);
    std::cout << "[ info ] acks received " << ok << ", lost " << lost << "\n";
}

}  // namespace
}  // namespace labctl
