#pragma once
// Helpers for privileged tests: random namespace names that are always removed, and
// `ip -j` as an independent witness (tests only; core/ never runs a command).

#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include <array>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "netns/netns.hpp"

namespace labctl::testing {

#define LABCTL_REQUIRE_ROOT()                                                              \
    do {                                                                                   \
        if (::geteuid() != 0) GTEST_SKIP() << "needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)"; \
    } while (0)

// "lt-<8 hex>": unique enough, and recognisably ours in `ip netns list`.
inline std::string random_name(const std::string& prefix = "lt-") {
    static std::mt19937_64 rng{std::random_device{}()};
    static const char* hex = "0123456789abcdef";
    std::string s = prefix;
    auto v = rng();
    for (int i = 0; i < 8; ++i, v >>= 4) s += hex[v & 15];
    return s;
}

// Last resort when a test crashes (abort, segfault, Ctrl-C): destructors do not run,
// so the live test namespaces are also kept in a fixed table that a signal handler
// unmounts and unlinks with async-signal-safe calls only.
namespace crash_cleanup {
inline constexpr std::size_t kSlots = 4096;
inline char paths[kSlots][80];
inline std::atomic<std::size_t> used{0};

inline void handler(int sig) {
    const std::size_t n = used.load();
    for (std::size_t i = 0; i < n && i < kSlots; ++i) {
        if (!paths[i][0]) continue;
        ::umount2(paths[i], MNT_DETACH);
        ::unlink(paths[i]);
    }
    ::signal(sig, SIG_DFL);
    ::raise(sig);
}

inline void install() {
    static std::atomic<bool> done{false};
    if (done.exchange(true)) return;
    for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGINT, SIGTERM}) ::signal(sig, handler);
}

// The slot of `name`, or kSlots when the table is full (then only RAII cleans up).
inline std::size_t add(const std::string& name) {
    install();
    const std::size_t i = used.fetch_add(1);
    if (i >= kSlots) return kSlots;
    std::snprintf(paths[i], sizeof paths[i], "%s/%s", netns::netns_dir().c_str(), name.c_str());
    return i;
}

inline void forget(std::size_t slot) {
    if (slot < kSlots) paths[slot][0] = 0;
}
}  // namespace crash_cleanup

// Namespaces made for one test; removed by the destructor whatever happened (and by
// crash_cleanup when the process dies).
class TestNamespaces {
public:
    TestNamespaces() = default;
    TestNamespaces(const TestNamespaces&) = delete;
    TestNamespaces& operator=(const TestNamespaces&) = delete;
    ~TestNamespaces() {
        for (std::size_t i = 0; i < names_.size(); ++i) {
            try {
                netns::remove(names_[i]);
            } catch (...) {}
            crash_cleanup::forget(slots_[i]);
        }
    }
    // Remembers the name before creating, so a half-made namespace is removed too.
    netns::NetnsHandle make(const std::string& prefix = "lt-") {
        track(random_name(prefix));
        return netns::create(names_.back());
    }
    std::vector<netns::NetnsHandle> make_many(std::size_t n) {
        std::vector<std::string> names;
        for (std::size_t i = 0; i < n; ++i) names.push_back(random_name());
        for (const auto& name : names) track(name);
        return netns::create_many(names);
    }
    void track(const std::string& name) {
        names_.push_back(name);
        slots_.push_back(crash_cleanup::add(name));
    }

private:
    std::vector<std::string> names_;
    std::vector<std::size_t> slots_;
};

// stdout of a command (test witness only).
inline std::string run(const std::string& cmd) {
    std::string out;
    std::unique_ptr<FILE, int (*)(FILE*)> p(::popen(cmd.c_str(), "r"), ::pclose);
    if (!p) return out;
    std::array<char, 4096> buf{};
    std::size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), p.get())) > 0) out.append(buf.data(), n);
    return out;
}

inline ino_t thread_netns_inode() {
    struct stat st {};
    ::stat("/proc/thread-self/ns/net", &st);
    return st.st_ino;
}

}  // namespace labctl::testing
