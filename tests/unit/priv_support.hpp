#pragma once
// Helpers for privileged tests: random namespace names that are always removed, and
// `ip -j` as an independent witness (tests only; core/ never runs a command).

#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "netns/netns.hpp"

namespace labctl::testing {

#define LABCTL_REQUIRE_ROOT() \
    do { \
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

// Namespaces made for one test; removed by the destructor whatever happened.
class TestNamespaces {
public:
    TestNamespaces() = default;
    TestNamespaces(const TestNamespaces&) = delete;
    TestNamespaces& operator=(const TestNamespaces&) = delete;
    ~TestNamespaces() {
        for (const auto& n : names_) {
            try {
                netns::remove(n);
            } catch (...) {
            }
        }
    }
    // Remembers the name before creating, so a half-made namespace is removed too.
    netns::NetnsHandle make(const std::string& prefix = "lt-") {
        names_.push_back(random_name(prefix));
        return netns::create(names_.back());
    }
    std::vector<netns::NetnsHandle> make_many(std::size_t n) {
        std::vector<std::string> names;
        for (std::size_t i = 0; i < n; ++i) names.push_back(random_name());
        names_.insert(names_.end(), names.begin(), names.end());
        return netns::create_many(names);
    }
    void track(const std::string& name) { names_.push_back(name); }

private:
    std::vector<std::string> names_;
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
