// Safety (issue 14): namespaces are acted on by identity, never by name alone; node
// commands run with the environment, user and directory they are given.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "base/error.hpp"
#include "netns/netns.hpp"
#include "priv_support.hpp"
#include "proc/proc.hpp"
#include "expect.hpp"

namespace labctl {
namespace {

using testing::random_name;
using testing::TestNamespaces;

std::pair<std::string, netns::NetnsIdentity> recorded(const std::string& name, const netns::NetnsIdentity& id) {
    return {name, id};
}

TEST(NetnsIdentity, RecordedBeforeTheNameExistsAndMatchesTheNamespace) {
    LABCTL_REQUIRE_ROOT();
    TestNamespaces t;
    const std::string name = random_name();
    t.track(name);
    netns::NetnsIdentity seen;
    bool existed = true;
    auto handles = netns::create_many({name}, {}, [&](std::size_t, const netns::NetnsIdentity& id) {
        seen = id;
        struct stat st {};
        existed = ::lstat(("/run/netns/" + name).c_str(), &st) == 0;
    });
    EXPECT_FALSE(existed);
    EXPECT_EQ(seen.dev, handles[0].dev);
    EXPECT_EQ(seen.ino, handles[0].ino);
    EXPECT_EQ(seen.cookie, netns::cookie_of(handles[0].fd.get()));
    EXPECT_NE(seen.file_ino, 0u);
    auto found = netns::inspect_many({recorded(name, seen)});
    EXPECT_EQ(found[0].found, netns::Found::ours);
}

TEST(NetnsIdentity, LosingANameRemovesOnlyWhatThisCallMade) {
    LABCTL_REQUIRE_ROOT();
    TestNamespaces t;
    auto theirs = t.make();
    const std::string a = random_name(), c = random_name();
    t.track(a);
    t.track(c);
    testing::expect_kernel_error([&] { netns::create_many({a, theirs.name, c}); }, EEXIST);
    EXPECT_FALSE(netns::exists(a));
    EXPECT_FALSE(netns::exists(c));
    auto id = netns::identity(theirs.name);
    ASSERT_TRUE(id);
    EXPECT_EQ(id->second, theirs.ino);
}

TEST(NetnsIdentity, AReplacedNamespaceIsForeignEvenWithAReusedInode) {
    LABCTL_REQUIRE_ROOT();
    TestNamespaces t;
    const std::string name = random_name();
    t.track(name);
    netns::NetnsIdentity mine;
    {
        netns::create_many({name}, {}, [&](std::size_t, const netns::NetnsIdentity& id) { mine = id; });
    }
    netns::remove(name);
    auto other = netns::create(name);  // may well get the freed inode number again
    auto found = netns::inspect_many({recorded(name, mine)});
    EXPECT_EQ(found[0].found, netns::Found::foreign);
    EXPECT_TRUE(netns::remove_owned_many({recorded(name, mine)}).size() == 1);
    auto id = netns::identity(name);
    ASSERT_TRUE(id);
    EXPECT_EQ(id->second, other.ino);
}

TEST(NetnsIdentity, ASymlinkAtTheNameIsNeverFollowed) {
    LABCTL_REQUIRE_ROOT();
    TestNamespaces t;
    auto target = t.make();
    const std::string name = random_name();
    const std::string link = "/run/netns/" + name;
    ASSERT_EQ(::symlink(("/run/netns/" + target.name).c_str(), link.c_str()), 0);
    netns::NetnsIdentity claimed{target.dev, target.ino, 0, 0, 0};  // even "ours" by dev/ino
    auto found = netns::inspect_many({recorded(name, claimed)});
    EXPECT_EQ(found[0].found, netns::Found::foreign);
    EXPECT_EQ(found[0].why, "is a symlink");
    EXPECT_EQ(netns::remove_owned_many({recorded(name, claimed)}).size(), 1u);
    struct stat st {};
    EXPECT_EQ(::lstat(link.c_str(), &st), 0);
    EXPECT_TRUE(S_ISLNK(st.st_mode));
    EXPECT_TRUE(netns::identity(target.name));
    EXPECT_FALSE(netns::identity(name));  // identity() does not follow it either
    ::unlink(link.c_str());
}

TEST(NetnsIdentity, ALeftoverFileOfOursIsRemovedAForeignOneIsNot) {
    LABCTL_REQUIRE_ROOT();
    const std::string mine = random_name(), theirs = random_name();
    for (const auto& n : {mine, theirs}) {
        int fd = ::open(("/run/netns/" + n).c_str(), O_CREAT | O_EXCL | O_RDONLY | O_CLOEXEC, 0);
        ASSERT_GE(fd, 0);
        ::close(fd);
    }
    struct stat st {};
    ASSERT_EQ(::lstat(("/run/netns/" + mine).c_str(), &st), 0);
    netns::NetnsIdentity id{0, 1, 0, st.st_dev, st.st_ino};
    auto failures = netns::remove_owned_many({recorded(mine, id), recorded(theirs, id)});
    EXPECT_EQ(failures.size(), 1u);
    EXPECT_FALSE(netns::exists(mine));
    EXPECT_TRUE(netns::exists(theirs));
    ::unlink(("/run/netns/" + theirs).c_str());
}

// ---- node commands -------------------------------------------------------------------------

class ProcSafety : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root";
        ns_ = t_.make().name;
    }
    proc::Command command(std::vector<std::string> argv) const { return proc::Command{ns_, std::move(argv)}; }
    TestNamespaces t_;
    std::string ns_;
};

TEST_F(ProcSafety, RunsUnderAnEmptyCallerEnvironment) {
    // Boost.Process v1's environment lookup read past its buffer here (ASan saw it);
    // the child's environment is built without it.
    std::vector<std::string> saved;
    for (char** e = ::environ; *e; ++e) saved.emplace_back(*e);
    ::clearenv();
    auto cmd = command({"/usr/bin/env"});
    cmd.extra_env = {{"A", "1"}};
    proc::RunResult r;
    EXPECT_NO_THROW(r = proc::run(cmd, std::nullopt, std::chrono::seconds(10)));
    for (auto& e : saved) ::putenv(::strdup(e.c_str()));
    EXPECT_EQ(r.out, "A=1\n");
}

TEST_F(ProcSafety, AGivenEnvironmentReplacesOurs) {
    ::setenv("LABCTL_TEST_SECRET", "x", 1);
    auto cmd = command({"env"});
    cmd.environment = std::vector<std::string>{"PATH=/usr/bin:/bin", "MODE=lab"};
    auto r = proc::run(cmd, std::nullopt, std::chrono::seconds(10));
    ::unsetenv("LABCTL_TEST_SECRET");
    EXPECT_EQ(r.returncode, 0) << r.err;
    EXPECT_EQ(r.out, "PATH=/usr/bin:/bin\nMODE=lab\n");
}

TEST_F(ProcSafety, AnAccountRunsWithoutCapabilitiesInItsDirectory) {
    auto cmd = command({"sh", "-c", "pwd; grep -E '^(Uid|CapEff|CapPrm|CapAmb):' /proc/self/status"});
    cmd.account = proc::resolve_user("nobody");
    cmd.cwd = "/";
    auto r = proc::run(cmd, std::nullopt, std::chrono::seconds(10));
    EXPECT_EQ(r.returncode, 0) << r.err;
    EXPECT_NE(r.out.find("/\nUid:\t65534\t65534\t65534\t65534\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("CapEff:\t0000000000000000"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("CapPrm:\t0000000000000000"), std::string::npos) << r.out;
    EXPECT_THROW(proc::resolve_user("no-such-user-here"), LabError);
    EXPECT_EQ(proc::resolve_user("4000000").uid, 4000000u);
}

TEST_F(ProcSafety, CancelStopsTheCommandAtOnce) {
    std::atomic<bool> cancel{false};
    std::thread later([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        cancel = true;
    });
    const auto start = std::chrono::steady_clock::now();
    try {
        proc::run(command({"sleep", "10"}), std::nullopt, std::chrono::seconds(30), &cancel);
        ADD_FAILURE() << "not cancelled";
    } catch (const LabError& e) {
        EXPECT_EQ(e.errno_value(), EINTR);
    }
    later.join();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
}

TEST_F(ProcSafety, OutputIsABoundedTail) {
    auto r = proc::run(command({"sh", "-c", "head -c 5000000 /dev/zero; echo end"}), std::nullopt,
                       std::chrono::seconds(30), nullptr, 1000);
    EXPECT_EQ(r.returncode, 0);
    EXPECT_EQ(r.out.size(), 1000u);
    EXPECT_EQ(r.out.substr(996), "end\n");
    EXPECT_EQ(r.dropped, 5000004u - 1000u);
}

}  // namespace
}  // namespace labctl
