#include "netns/netns.hpp"

#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>

#include "base/error.hpp"
#include "priv_support.hpp"
#include "expect.hpp"

namespace labctl {
namespace {

using testing::expect_kernel_error;
using testing::random_name;
using testing::run;
using testing::TestNamespaces;
using testing::thread_netns_inode;

TEST(NetnsName, InvalidNamesAreRejectedBeforeTouchingAnything) {
    for (const std::string bad : {"", ".", "..", "a/b"}) {
        try {
            netns::create_many({bad});
            ADD_FAILURE() << "accepted \"" << bad << "\"";
        } catch (const KernelError& e) {
            EXPECT_EQ(e.errno_value(), EINVAL);
        }
        EXPECT_FALSE(netns::exists(bad));
    }
}

TEST(NetnsOpen, MissingNameIsENOENT) {
    auto e = expect_kernel_error([] { netns::open(random_name()); }, ENOENT);
    EXPECT_NE(std::string(e.what()).find("No such file or directory (ENOENT)"), std::string::npos);
}

TEST(NetnsCreate, CreateOpenIdentityRemove) {
    LABCTL_REQUIRE_ROOT();
    TestNamespaces t;
    auto h = t.make();
    EXPECT_TRUE(netns::exists(h.name));
    auto id = netns::identity(h.name);
    ASSERT_TRUE(id);
    EXPECT_EQ(id->first, h.dev);
    EXPECT_EQ(id->second, h.ino);
    auto again = netns::open(h.name);
    EXPECT_TRUE(again.same_as(h));
    auto here = netns::open_current();
    EXPECT_FALSE(here.same_as(h));
    // iproute2 sees it.
    EXPECT_NE(run("ip -j netns list").find("\"" + h.name + "\""), std::string::npos);
    // A fresh namespace holds only lo.
    auto links = run("ip -j -n " + h.name + " link show");
    EXPECT_NE(links.find("\"lo\""), std::string::npos);
    netns::remove(h.name);
    EXPECT_FALSE(netns::exists(h.name));
    EXPECT_FALSE(netns::identity(h.name));
    EXPECT_NO_THROW(netns::remove(h.name));  // idempotent
    EXPECT_EQ(run("ip -j netns list").find("\"" + h.name + "\""), std::string::npos);
}

TEST(NetnsCreate, ExistingNameFailsUndoesTheRestAndLeavesItAlone) {
    LABCTL_REQUIRE_ROOT();
    TestNamespaces t;
    auto a = t.make();
    const std::string b = random_name();
    t.track(b);
    auto e = expect_kernel_error([&] { netns::create_many({b, a.name}); }, EEXIST);
    EXPECT_NE(std::string(e.what()).find(a.name), std::string::npos) << e.what();
    EXPECT_FALSE(netns::exists(b));
    auto id = netns::identity(a.name);
    ASSERT_TRUE(id);
    EXPECT_EQ(id->second, a.ino);
}

TEST(NetnsCreate, InsideCallbackRunsInTheNewNamespaceAndItsErrorUndoes) {
    LABCTL_REQUIRE_ROOT();
    TestNamespaces t;
    std::vector<std::string> names{random_name(), random_name()};
    for (auto& n : names) t.track(n);
    std::vector<ino_t> seen(2);
    auto hs = netns::create_many(names, [&](std::size_t i) { seen[i] = thread_netns_inode(); });
    EXPECT_EQ(seen[0], hs[0].ino);
    EXPECT_EQ(seen[1], hs[1].ino);

    std::vector<std::string> more{random_name(), random_name()};
    for (auto& n : more) t.track(n);
    EXPECT_THROW(netns::create_many(more,
                                    [&](std::size_t i) {
                                        if (i == 1) throw std::runtime_error("boom");
                                    }),
                 std::runtime_error);
    EXPECT_FALSE(netns::exists(more[0]));
    EXPECT_FALSE(netns::exists(more[1]));
}

// Large batches are made by several threads at once: every handle is the namespace its
// name holds, `inside` ran in that very namespace, and a failure of any one removes
// every namespace of the batch, the pre-existing file untouched.
TEST(NetnsCreate, ManyAtOnceInOrderAndAllUndoneOnFailure) {
    LABCTL_REQUIRE_ROOT();
    TestNamespaces t;
    constexpr std::size_t kCount = 120;
    std::vector<std::string> names;
    for (std::size_t i = 0; i < kCount; ++i) names.push_back(random_name());
    for (auto& n : names) t.track(n);
    std::vector<ino_t> seen(kCount);
    std::vector<std::thread::id> threads(kCount);
    auto hs = netns::create_many(names, [&](std::size_t i) {
        seen[i] = thread_netns_inode();
        threads[i] = std::this_thread::get_id();
    });
    ASSERT_EQ(hs.size(), kCount);
    std::set<ino_t> distinct;
    for (std::size_t i = 0; i < kCount; ++i) {
        EXPECT_EQ(hs[i].name, names[i]);
        EXPECT_EQ(seen[i], hs[i].ino) << i;
        auto id = netns::identity(names[i]);
        ASSERT_TRUE(id);
        EXPECT_EQ(id->second, hs[i].ino);
        distinct.insert(hs[i].ino);
    }
    EXPECT_EQ(distinct.size(), kCount);
    const std::set<std::thread::id> workers(threads.begin(), threads.end());
    EXPECT_EQ(workers.size(), std::min<std::size_t>(std::max(1u, std::thread::hardware_concurrency()), 4))
        << "120 namespaces are made by one thread per CPU (at most 4)";
    EXPECT_FALSE(workers.contains(std::this_thread::get_id()));

    // A failure on one thread: everything of the batch goes, the foreign file stays.
    auto existing = t.make();
    std::vector<std::string> more;
    for (std::size_t i = 0; i < kCount; ++i) more.push_back(i == 90 ? existing.name : random_name());
    for (auto& n : more) t.track(n);
    try {
        netns::create_many(more);
        ADD_FAILURE() << "an existing name must fail the batch";
    } catch (const KernelError& e) {
        EXPECT_EQ(e.errno_value(), EEXIST);
        EXPECT_NE(std::string(e.what()).find(existing.name), std::string::npos) << e.what();
    }
    for (std::size_t i = 0; i < kCount; ++i) {
        if (i == 90) continue;
        EXPECT_FALSE(netns::exists(more[i])) << i;
    }
    auto id = netns::identity(existing.name);
    ASSERT_TRUE(id);
    EXPECT_EQ(id->second, existing.ino);

    std::vector<std::string> third;
    for (std::size_t i = 0; i < kCount; ++i) third.push_back(random_name());
    for (auto& n : third) t.track(n);
    EXPECT_THROW(netns::create_many(third,
                                    [&](std::size_t i) {
                                        if (i == 61) throw std::runtime_error("boom");
                                    }),
                 std::runtime_error);
    for (const auto& n : third) EXPECT_FALSE(netns::exists(n)) << n;

    // Removal on several threads: every name goes; a bad one is reported, not thrown,
    // and does not stop the others.
    std::vector<std::string> doomed = names;
    doomed.insert(doomed.begin() + 50, "not/a/name");
    hs.clear();
    auto failures = netns::remove_many(doomed);
    ASSERT_EQ(failures.size(), 1u);
    EXPECT_NE(failures[0].find("not/a/name"), std::string::npos) << failures[0];
    for (const auto& n : names) EXPECT_FALSE(netns::exists(n)) << n;
    EXPECT_TRUE(netns::remove_many(names).empty());  // idempotent
}

TEST(NetnsRunIn, CallerThreadNeverChangesNamespace) {
    LABCTL_REQUIRE_ROOT();
    TestNamespaces t;
    auto h = t.make();
    const ino_t before = thread_netns_inode();
    const ino_t inside = netns::run_in(h, [] { return thread_netns_inode(); });
    EXPECT_EQ(inside, h.ino);
    EXPECT_EQ(thread_netns_inode(), before);
    EXPECT_THROW(netns::run_in(h, [] { throw std::runtime_error("x"); }), std::runtime_error);
    EXPECT_EQ(thread_netns_inode(), before);

    auto h2 = t.make();
    std::vector<ino_t> seen;
    netns::run_in_each({&h, &h2}, [&](std::size_t) { seen.push_back(thread_netns_inode()); });
    EXPECT_EQ(seen, (std::vector<ino_t>{h.ino, h2.ino}));
    EXPECT_EQ(thread_netns_inode(), before);
}

// The tests' own safety net: a test process that dies still removes its namespaces.
TEST(NetnsTestSupport, CrashRemovesTestNamespaces) {
    LABCTL_REQUIRE_ROOT();
    const std::string name = random_name();
    EXPECT_DEATH(
        {
            TestNamespaces t;
            t.track(name);
            netns::create(name);
            if (netns::exists(name)) std::fputs("created\n", stderr);
            std::abort();
        },
        "created");
    EXPECT_FALSE(netns::exists(name));
    netns::remove(name);
}

TEST(NetnsWorker, RunsJobsInsideAndRethrows) {
    LABCTL_REQUIRE_ROOT();
    TestNamespaces t;
    auto h = t.make();
    const ino_t before = thread_netns_inode();
    netns::NetnsWorker w(h);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(w.run([] { return thread_netns_inode(); }), h.ino);
    EXPECT_THROW(w.run([] { throw std::runtime_error("x"); }), std::runtime_error);
    EXPECT_EQ(w.run([] { return 42; }), 42);
    std::vector<std::thread> callers;
    std::atomic<int> inside{0};
    for (int i = 0; i < 4; ++i)
        callers.emplace_back([&] {
            if (w.run([] { return thread_netns_inode(); }) == h.ino) ++inside;
        });
    for (auto& c : callers) c.join();
    EXPECT_EQ(inside, 4);
    EXPECT_EQ(thread_netns_inode(), before);
}

TEST(NetnsCreateMany, TwoHundredAreDistinctAndRemoved) {
    LABCTL_REQUIRE_ROOT();
    TestNamespaces t;
    const auto start = std::chrono::steady_clock::now();
    auto hs = t.make_many(200);
    const auto made = std::chrono::steady_clock::now();
    std::set<ino_t> inodes;
    for (auto& h : hs) inodes.insert(h.ino);
    EXPECT_EQ(inodes.size(), 200u);
    for (auto& h : hs) netns::remove(h.name);
    const auto removed = std::chrono::steady_clock::now();
    for (auto& h : hs) EXPECT_FALSE(netns::exists(h.name));
    using ms = std::chrono::milliseconds;
    std::cout << "[ timing ] create 200: " << std::chrono::duration_cast<ms>(made - start).count()
              << " ms, remove 200: " << std::chrono::duration_cast<ms>(removed - made).count() << " ms\n";
}

}  // namespace
}  // namespace labctl
