// proc/: commands, daemons and cleanup inside network namespaces. Needs root: each
// test makes its own namespace (pr-<random>) with `ip netns add` and removes it, and
// kills only processes it started.

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "proc/proc.hpp"
#include "proc/spawn.hpp"
#include "expect.hpp"

namespace labctl::proc {
namespace {

using namespace std::chrono_literals;
using labctl::testing::expect_kernel_error;
using ::testing::HasSubstr;

std::string random_suffix() {
    std::random_device rd;
    std::ostringstream s;
    s << std::hex << rd() % 0xffffff;
    return s.str();
}

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::vector<std::string> lines(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

// A field of /proc/<pid>/status, e.g. "PPid".
std::string status_field(pid_t pid, const std::string& key) {
    for (const auto& line : lines(read_file("/proc/" + std::to_string(pid) + "/status"))) {
        if (line.rfind(key + ":", 0) == 0) {
            auto value = line.substr(key.size() + 1);
            value.erase(0, value.find_first_not_of(" \t"));
            return value;
        }
    }
    return {};
}

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 5000ms) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (pred()) return true;
        std::this_thread::sleep_for(20ms);
    }
    return pred();
}

class Proc : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root";
        ns_ = "pr-" + random_suffix();
        ASSERT_EQ(std::system(("ip netns add " + ns_).c_str()), 0);
        dir_ = std::filesystem::temp_directory_path() / ("labctl-proc-" + ns_);
        std::filesystem::create_directories(dir_);
    }
    void TearDown() override {
        if (ns_.empty()) return;
        for (const auto& id : daemons_) {
            if (is_same_process(id)) ::kill(id.pid, SIGKILL);
        }
        // Whatever else a failed test left in its namespace was started by it too, and
        // would keep the namespace alive after `ip netns del`.
        const auto [dev, ino] = netns_id();
        for (const pid_t pid : pids_in_netns(dev, ino)) ::kill(pid, SIGKILL);
        std::error_code ec;
        std::filesystem::remove_all("/etc/netns/" + ns_, ec);
        if (made_etc_netns_) std::filesystem::remove("/etc/netns", ec);  // only if empty
        for (const auto& f : etc_files_) std::filesystem::remove(f, ec);
        std::filesystem::remove_all(dir_, ec);
        std::system(("ip netns del " + ns_ + " 2>/dev/null").c_str());
    }
    Command command(std::vector<std::string> argv) const { return Command{ns_, std::move(argv)}; }
    std::pair<dev_t, ino_t> netns_id() const {
        struct stat st {};
        EXPECT_EQ(::stat(("/run/netns/" + ns_).c_str(), &st), 0);
        return {st.st_dev, st.st_ino};
    }

    std::string ns_;
    std::filesystem::path dir_;
    std::vector<ProcessId> daemons_;
    bool made_etc_netns_ = false;
    std::vector<std::filesystem::path> etc_files_;  // files a test made in /etc
};

// Needs no root: the parser the forked child also uses.
TEST(ProcParseStat, CountsFieldsFromTheLastParenthesis) {
    const std::string text =
        "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 "
        "1000 10 18446744073709551615\n";
    char state = 0;
    unsigned long long start = 0;
    ASSERT_TRUE(detail::parse_stat(text.data(), text.size(), &state, &start));
    EXPECT_EQ(state, 'S');
    EXPECT_EQ(start, 987654u);
    const std::string cut = "4242 (x) Z 1 2 3";
    EXPECT_FALSE(detail::parse_stat(cut.data(), cut.size(), &state, &start));
    EXPECT_FALSE(detail::parse_stat("garbage", 7, &state, &start));
}

TEST_F(Proc, RunPassesExitCodeThrough) {
    EXPECT_EQ(run(command({"true"}), std::nullopt, 10s).returncode, 0);
    EXPECT_EQ(run(command({"false"}), std::nullopt, 10s).returncode, 1);
    EXPECT_EQ(run(command({"/bin/sh", "-c", "exit 7"}), std::nullopt, 10s).returncode, 7);
}

TEST_F(Proc, RunReportsDeathBySignalAsNegative) {
    EXPECT_EQ(run(command({"/bin/sh", "-c", "kill -TERM $$"}), std::nullopt, 10s).returncode, -SIGTERM);
}

TEST_F(Proc, RunFeedsStdinAndCapturesStdout) {
    auto r = run(command({"cat"}), std::string("hello\nworld\n"), 10s);
    EXPECT_EQ(r.returncode, 0);
    EXPECT_EQ(r.out, "hello\nworld\n");
    EXPECT_EQ(r.err, "");
    EXPECT_FALSE(r.timed_out);
    // No input: /dev/null, so cat ends at once.
    EXPECT_EQ(run(command({"cat"}), std::nullopt, 10s).out, "");
    EXPECT_EQ(run(command({"cat"}), std::string(), 10s).out, "");
}

TEST_F(Proc, RunCapturesLargeStdoutAndStderrWithoutDeadlock) {
    const std::string input(3 << 20, 'x');
    auto r = run(command({"/bin/sh", "-c", "cat; head -c 2000000 /dev/zero >&2; echo end"}), input, 30s);
    EXPECT_EQ(r.returncode, 0);
    EXPECT_EQ(r.out.size(), input.size() + 4);
    EXPECT_EQ(r.err.size(), 2000000u);
}

TEST_F(Proc, RunIgnoresCommandThatDoesNotReadStdin) {
    auto r = run(command({"true"}), std::string(1 << 20, 'x'), 10s);
    EXPECT_EQ(r.returncode, 0);
}

TEST_F(Proc, RunPassesArgumentsLiterally) {
    const std::vector<std::string> args = {"$(id)", "a;b", "`id`", "x y", "*", "'q'\"", ""};
    std::vector<std::string> argv = {"printf", "[%s]\\n"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = run(command(argv), std::nullopt, 10s);
    EXPECT_EQ(r.returncode, 0);
    EXPECT_EQ(r.out, "[$(id)]\n[a;b]\n[`id`]\n[x y]\n[*]\n['q'\"]\n[]\n");
}

TEST_F(Proc, RunKeepsArgvZero) {
    // $0 of `sh -c CMD NAME` is NAME; the program's own argv[0] is what we were given.
    auto r = run(command({"sh", "-c", "echo \"$0\"; tr '\\0' ' ' < /proc/$$/cmdline", "zero"}), std::nullopt, 10s);
    EXPECT_EQ(r.out, "zero\nsh -c echo \"$0\"; tr '\\0' ' ' < /proc/$$/cmdline zero ");
}

TEST_F(Proc, RunSeparatesStderrAndAddsEnvironment) {
    Command c = command({"/bin/sh", "-c", "echo \"$LABCTL_PROC_TEST\"; echo oops >&2; exit 3"});
    c.extra_env["LABCTL_PROC_TEST"] = "value with $(spaces)";
    auto r = run(c, std::nullopt, 10s);
    EXPECT_EQ(r.returncode, 3);
    EXPECT_EQ(r.out, "value with $(spaces)\n");
    EXPECT_EQ(r.err, "oops\n");
}

TEST_F(Proc, RunSeesTheNamespaceInSysClassNet) {
    ASSERT_EQ(std::system(("ip -n " + ns_ + " link add pr0a type veth peer name pr0b").c_str()), 0);
    auto r = run(command({"ls", "/sys/class/net"}), std::nullopt, 10s);
    ASSERT_EQ(r.returncode, 0) << r.err;
    std::set<std::string> names;
    for (const auto& n : lines(r.out)) names.insert(n);
    EXPECT_EQ(names, (std::set<std::string>{"lo", "pr0a", "pr0b"}));
    // Ours is untouched: the mount happened in the child's own mount namespace.
    EXPECT_FALSE(std::filesystem::exists("/sys/class/net/pr0a"));
    // And the kernel agrees: the interfaces are in that namespace.
    auto ip = run(command({"ip", "-o", "link", "show", "pr0a"}), std::nullopt, 10s);
    EXPECT_EQ(ip.returncode, 0) << ip.err;
}

TEST_F(Proc, RunBindsEtcNetnsFilesOverEtc) {
    // The test makes the /etc file it binds over (a minimal system has no /etc/hosts),
    // and a second entry whose /etc target does not exist: iproute2 skips that one with
    // a warning and runs the command; so does labctl.
    const std::string present = "labctl-test-" + ns_;
    const std::string absent = "labctl-absent-" + ns_;
    const std::filesystem::path host_file = "/etc/" + present;
    std::ofstream(host_file) << "host\n";
    etc_files_.push_back(host_file);
    ASSERT_FALSE(std::filesystem::exists("/etc/" + absent));
    const std::filesystem::path etc = "/etc/netns/" + ns_;
    made_etc_netns_ = !std::filesystem::exists("/etc/netns");
    std::filesystem::create_directories(etc);
    std::ofstream(etc / present) << "10.1.2.3 pr-node\n";
    std::ofstream(etc / absent) << "unused\n";
    auto r =
        run(command({"/bin/sh", "-c", "cat /etc/" + present + "; test -e /etc/" + absent + " || echo no-" + absent}),
            std::nullopt, 10s);
    EXPECT_EQ(r.returncode, 0) << r.err;
    EXPECT_EQ(r.out, "10.1.2.3 pr-node\nno-" + absent + "\n");
    EXPECT_EQ(read_file(host_file), "host\n");
    EXPECT_FALSE(std::filesystem::exists("/etc/" + absent));
}

TEST_F(Proc, RunTimeoutKillsTheProcessGroup) {
    const auto start = std::chrono::steady_clock::now();
    // The background sleep holds the pipes open too: it must die with its group.
    auto r = run(command({"/bin/sh", "-c", "sleep 30 & echo started; sleep 30"}), std::nullopt, 300ms);
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_TRUE(r.timed_out);
    EXPECT_EQ(r.returncode, -SIGKILL);
    EXPECT_EQ(r.out, "started\n");
    EXPECT_LT(took, 5s);
    EXPECT_GE(took, 300ms);
}

TEST_F(Proc, RunDoesNotWaitForBackgroundChildren) {
    const auto start = std::chrono::steady_clock::now();
    // setsid takes the sleeper out of the group; the test kills it by pid below.
    auto r = run(command({"/bin/sh", "-c", "setsid sleep 30 & echo $!"}), std::nullopt, 20s);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
    EXPECT_FALSE(r.timed_out);
    const pid_t sleeper = std::stoi(r.out);
    ASSERT_GT(sleeper, 1);
    ::kill(sleeper, SIGKILL);
}

TEST_F(Proc, RunLeaksNoDescriptorIntoTheChild) {
    // Not close-on-exec on purpose: the child must still not get it.
    const int leaky = ::open("/dev/null", O_RDONLY);
    ASSERT_GE(leaky, 3);
    auto r = run(command({"ls", "/proc/self/fd"}), std::nullopt, 10s);
    ::close(leaky);
    ASSERT_EQ(r.returncode, 0) << r.err;
    // 0, 1, 2, and the directory ls itself opened to list them.
    EXPECT_EQ(lines(r.out), (std::vector<std::string>{"0", "1", "2", "3"}));
}

TEST_F(Proc, RunGivesTheChildCleanSignals) {
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    struct sigaction old {};
    ::sigaction(SIGPIPE, &ignore, &old);
    sigset_t block, old_mask;
    ::sigemptyset(&block);
    ::sigaddset(&block, SIGUSR1);
    ::pthread_sigmask(SIG_BLOCK, &block, &old_mask);
    auto r = run(command({"grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"}), std::nullopt, 10s);
    ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    ::sigaction(SIGPIPE, &old, nullptr);
    EXPECT_EQ(r.out, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

TEST_F(Proc, RunErrorNamesNetnsAndProgram) {
    {
        auto e = expect_kernel_error([&] { run(command({"labctl-no-such-program"}), std::nullopt, 10s); }, ENOENT);
        EXPECT_EQ(std::string(e.what()),
                  ns_ + ": running \"labctl-no-such-program\": No such file or directory (ENOENT)");
    }
    // Found by path: execve itself fails, in the child, and says so to us.
    Command c = command({"/nonexistent/prog"});
    c.label = "h1";
    EXPECT_EQ(std::string(expect_kernel_error([&] { run(c, std::nullopt, 10s); }).what()),
              "h1: running \"/nonexistent/prog\": No such file or directory (ENOENT)");
    // Not executable.
    const auto script = dir_ / "script";
    std::ofstream(script) << "echo hi\n";
    expect_kernel_error([&] { run(command({script.string()}), std::nullopt, 10s); }, EACCES);
    // Without a shebang: ENOEXEC, and no shell is tried (execvp would).
    std::filesystem::permissions(script, std::filesystem::perms::owner_all);
    expect_kernel_error([&] { run(command({script.string()}), std::nullopt, 10s); }, ENOEXEC);
}

TEST_F(Proc, RunErrorForMissingNamespace) {
    Command c{"pr-missing-" + random_suffix(), {"true"}};
    EXPECT_THAT(expect_kernel_error([&] { run(c, std::nullopt, 10s); }, ENOENT).what(),
                HasSubstr(c.netns + ": running \"true\": opening /run/netns/"));
    EXPECT_THROW(run(command({}), std::nullopt, 10s), LabError);
}

TEST_F(Proc, RunEntersANamespaceGivenByFd) {
    UniqueFd fd(::open(("/run/netns/" + ns_).c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    ASSERT_EQ(std::system(("ip -n " + ns_ + " link add pr1a type veth peer name pr1b").c_str()), 0);
    Command c = command({"ls", "/sys/class/net"});
    c.netns_fd = fd.get();
    auto r = run(c, std::nullopt, 10s);
    EXPECT_THAT(r.out, HasSubstr("pr1a"));
}

TEST_F(Proc, RunWorksFromManyThreads) {
    std::vector<std::thread> threads;
    std::vector<RunResult> results(6);
    for (std::size_t i = 0; i < results.size(); ++i) {
        threads.emplace_back([&, i] {
            results[i] = run(command({"/bin/echo", std::to_string(i)}), std::nullopt, 10s);
        });
    }
    for (auto& t : threads) t.join();
    for (std::size_t i = 0; i < results.size(); ++i) {
        EXPECT_EQ(results[i].out, std::to_string(i) + "\n");
    }
}

TEST_F(Proc, DaemonSurvivesItsStarterLogsAndStops) {
    const std::string log = (dir_ / "d.log").string();
    // The starter is a process of its own that exits at once, like `labctl up`.
    int pipe_fds[2];
    ASSERT_EQ(::pipe(pipe_fds), 0);
    const pid_t starter = ::fork();
    ASSERT_GE(starter, 0);
    if (starter == 0) {
        ProcessId id{};
        try {
            id = start_daemon(command({"/bin/sh", "-c", "echo started; echo to-stderr >&2; exec sleep 60"}), log);
        } catch (...) {
            ::_exit(1);
        }
        (void)!::write(pipe_fds[1], &id, sizeof id);
        ::_exit(0);
    }
    ::close(pipe_fds[1]);
    ProcessId id{};
    ASSERT_EQ(::read(pipe_fds[0], &id, sizeof id), static_cast<ssize_t>(sizeof id));
    ::close(pipe_fds[0]);
    int status = 0;
    ASSERT_EQ(::waitpid(starter, &status, 0), starter);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    daemons_.push_back(id);

    EXPECT_TRUE(is_same_process(id));
    EXPECT_TRUE(eventually([&] { return read_file(log) == "started\nto-stderr\n"; })) << read_file(log);
    struct stat st {};
    ASSERT_EQ(::stat(log.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    EXPECT_NE(status_field(id.pid, "PPid"), std::to_string(starter));
    EXPECT_EQ(status_field(id.pid, "NSsid"), std::to_string(id.pid));  // its own session
    const auto [dev, ino] = netns_id();
    struct stat ns {};
    ASSERT_EQ(::stat(("/proc/" + std::to_string(id.pid) + "/ns/net").c_str(), &ns), 0);
    EXPECT_EQ(ns.st_dev, dev);
    EXPECT_EQ(ns.st_ino, ino);

    stop(id, 2s);
    EXPECT_FALSE(is_same_process(id));
}

TEST_F(Proc, DaemonLogIsAppendedTo) {
    const std::string log = (dir_ / "d.log").string();
    std::ofstream(log) << "before\n";
    auto id = start_daemon(command({"echo", "after"}), log);
    daemons_.push_back(id);
    EXPECT_TRUE(eventually([&] { return read_file(log) == "before\nafter\n"; })) << read_file(log);
}

TEST_F(Proc, DaemonThatCannotStartIsAnError) {
    EXPECT_THAT(
        expect_kernel_error([&] { start_daemon(command({"/nonexistent/daemon"}), (dir_ / "x.log").string()); }, ENOENT)
            .what(),
        HasSubstr("running \"/nonexistent/daemon\""));
    EXPECT_THROW(start_daemon(command({"true"}), "/nonexistent/dir/x.log"), KernelError);
}

TEST_F(Proc, IsSameProcessIsFalseOnceItDied) {
    // The daemon lives until the test lets it end (no guess at how long a check takes).
    const auto go = dir_ / "go";
    auto id = start_daemon(command({"/bin/sh", "-c", "while [ ! -e " + go.string() + " ]; do sleep 0.01; done"}),
                           (dir_ / "s.log").string());
    daemons_.push_back(id);
    EXPECT_TRUE(is_same_process(id));
    EXPECT_FALSE(is_same_process(ProcessId{id.pid, id.start_time + 1}));  // a reused pid
    std::ofstream(go).close();
    EXPECT_TRUE(eventually([&] { return !is_same_process(id); }));
    stop(id, 100ms);  // gone already: nothing to do
    EXPECT_TRUE(start_time_of(::getpid()).has_value());
    EXPECT_FALSE(start_time_of(0).has_value());
}

TEST_F(Proc, StopKillsWhatIgnoresSigterm) {
    auto id =
        start_daemon(command({"/bin/sh", "-c", "trap '' TERM; echo ready; exec sleep 60"}), (dir_ / "t.log").string());
    daemons_.push_back(id);
    ASSERT_TRUE(eventually([&] { return read_file((dir_ / "t.log").string()) == "ready\n"; }));
    const auto start = std::chrono::steady_clock::now();
    stop(id, 300ms);
    EXPECT_GE(std::chrono::steady_clock::now() - start, 300ms);
    EXPECT_FALSE(is_same_process(id));
}

TEST_F(Proc, KillAllInNetnsFindsAndKillsSleepers) {
    const auto [dev, ino] = netns_id();
    EXPECT_TRUE(pids_in_netns(dev, ino).empty());
    auto polite = start_daemon(command({"sleep", "60"}), (dir_ / "a.log").string());
    auto stubborn =
        start_daemon(command({"/bin/sh", "-c", "trap '' TERM; echo ready; sleep 60"}), (dir_ / "b.log").string());
    daemons_.push_back(polite);
    daemons_.push_back(stubborn);
    ASSERT_TRUE(eventually([&] { return read_file((dir_ / "b.log").string()) == "ready\n"; }));
    const auto pids = pids_in_netns(dev, ino);
    EXPECT_THAT(pids, ::testing::Contains(polite.pid));
    EXPECT_THAT(pids, ::testing::Contains(stubborn.pid));
    EXPECT_THAT(pids, ::testing::Not(::testing::Contains(::getpid())));

    kill_all_in_netns(dev, ino, 300ms);
    EXPECT_TRUE(pids_in_netns(dev, ino).empty());
    EXPECT_FALSE(is_same_process(polite));
    EXPECT_FALSE(is_same_process(stubborn));
}

TEST_F(Proc, InteractiveReturnsExitCodeAndSharesStdout) {
    EXPECT_EQ(run_interactive(command({"/bin/sh", "-c", "exit 5"})), 5);
    EXPECT_EQ(run_interactive(command({"/bin/sh", "-c", "kill -KILL $$"})), 128 + SIGKILL);

    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    const int saved = ::dup(STDOUT_FILENO);
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[1]);
    const int code = run_interactive(command({"ls", "/sys/class/net"}));
    ::dup2(saved, STDOUT_FILENO);
    ::close(saved);
    char buf[256] = {};
    const ssize_t n = ::read(fds[0], buf, sizeof buf - 1);
    ::close(fds[0]);
    EXPECT_EQ(code, 0);
    EXPECT_EQ(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0), "lo\n");
}

TEST_F(Proc, InteractiveForwardsSigterm) {
    // A helper sends SIGTERM to us (as `kill <labctl pid>` would) while the command runs.
    const pid_t self = ::getpid();
    const pid_t helper = ::fork();
    ASSERT_GE(helper, 0);
    if (helper == 0) {
        // Only once the command runs (a child of ours named sleep), so that the signal
        // reaches run_interactive's forwarding, not a test binary still setting up.
        for (int i = 0; i < 2000; ++i) {  // up to 20 s
            for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
                const std::string pid = entry.path().filename();
                if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
                std::ifstream status(entry.path() / "status");
                std::string line, name;
                bool ours = false;
                while (std::getline(status, line)) {
                    if (line.rfind("Name:\t", 0) == 0) name = line.substr(6);
                    if (line == "PPid:\t" + std::to_string(self)) ours = true;
                }
                if (ours && name == "sleep") {
                    ::kill(self, SIGTERM);
                    ::_exit(0);
                }
            }
            ::usleep(10 * 1000);
        }
        ::_exit(1);  // never saw it: the test fails on the exit code (sleep 30 runs out)
    }
    const int code = run_interactive(command({"sleep", "30"}));
    ::waitpid(helper, nullptr, 0);
    EXPECT_EQ(code, 128 + SIGTERM);
}

}  // namespace
}  // namespace labctl::proc
