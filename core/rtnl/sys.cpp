// TUN/TAP devices (ioctls on /dev/net/tun) and sysctls (/proc/sys/net).
#include <fcntl.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <linux/if_tun.h>

#include <cerrno>
#include <cstring>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "rtnl/rtnl.hpp"

namespace labctl::rtnl {

void tuntap_create_here(const std::string& name, bool tap, std::optional<std::uint32_t> owner,
                        std::optional<std::uint32_t> group, int ifindex) {
    check_ifname(name);
    const std::string what = std::string(tap ? "tap " : "tun ") + name;
    // /dev/net/tun creates the device in the namespace of the task that opens it.
    UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
    if (!fd) throw_last_errno(what + ": opening /dev/net/tun");
    if (ifindex > 0) {
        // Applies to the device the next TUNSETIFF creates on this fd.
        const unsigned int index = static_cast<unsigned int>(ifindex);
        if (::ioctl(fd.get(), TUNSETIFINDEX, &index) != 0)
            throw_last_errno(what + ": choosing ifindex " + std::to_string(ifindex) + " (TUNSETIFINDEX)");
    }
    ifreq ifr{};
    std::memcpy(ifr.ifr_name, name.data(), name.size());
    // IFF_TUN_EXCL: fail with EBUSY instead of attaching to an existing device.
    ifr.ifr_flags = static_cast<short>((tap ? IFF_TAP : IFF_TUN) | IFF_NO_PI | IFF_TUN_EXCL);
    if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) throw_last_errno(what + ": creating (TUNSETIFF)");
    // From here the device exists but vanishes when fd closes unless made persistent:
    // a failure below therefore leaves nothing behind.
    if (owner && ::ioctl(fd.get(), TUNSETOWNER, static_cast<unsigned long>(*owner)) != 0)
        throw_last_errno(what + ": setting owner " + std::to_string(*owner) + " (TUNSETOWNER)");
    if (group && ::ioctl(fd.get(), TUNSETGROUP, static_cast<unsigned long>(*group)) != 0)
        throw_last_errno(what + ": setting group " + std::to_string(*group) + " (TUNSETGROUP)");
    if (::ioctl(fd.get(), TUNSETPERSIST, 1UL) != 0) throw_last_errno(what + ": making persistent (TUNSETPERSIST)");
}

void tuntap_create(const netns::NetnsHandle& ns, const std::string& name, bool tap, std::optional<std::uint32_t> owner,
                   std::optional<std::uint32_t> group, int ifindex) {
    netns::run_in(ns, [&] { tuntap_create_here(name, tap, owner, group, ifindex); });
}

std::string sysctl_path(const std::string& key) {
    const std::string what = "sysctl " + key;
    if (key.rfind("net.", 0) != 0) throw KernelError(EINVAL, what, "only keys under net. are allowed");
    std::string path = "/proc/sys/";
    std::size_t start = 0;
    for (;;) {
        const std::size_t dot = key.find('.', start);
        std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
        // sysctl(8): a '/' in a key stands for a '.' inside one component ("eth0/10").
        for (char& c : part)
            if (c == '/') c = '.';
        if (part.empty() || part == "." || part == ".." || part.find('\0') != std::string::npos)
            throw KernelError(EINVAL, what, "malformed key");
        path += part;
        if (dot == std::string::npos) break;
        path += '/';
        start = dot + 1;
    }
    return path;
}

namespace {

void write_all(int fd, const std::string& value, const std::string& what) {
    const char* p = value.data();
    std::size_t left = value.size();
    while (left > 0) {
        const ssize_t n = ::write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_last_errno(what);
        }
        p += n;
        left -= static_cast<std::size_t>(n);
    }
}

std::string describe_write(const std::string& key, const std::string& value) {
    return "sysctl " + key + ": writing \"" + value + "\"";
}

// A new procfs instance, detached: its root, or none when the kernel refuses.
UniqueFd own_procfs() {
    UniqueFd context(::fsopen("proc", FSOPEN_CLOEXEC));
    if (!context || ::fsconfig(context.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) return {};
    return UniqueFd(::fsmount(context.get(), FSMOUNT_CLOEXEC, 0));
}

}  // namespace

void sysctl_write_here(const std::string& key, const std::string& value) {
    const std::string path = sysctl_path(key);
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) throw_last_errno(describe_write(key, value));
    write_all(fd.get(), value, describe_write(key, value));
}

void SysctlWriter::write(const std::string& key, const std::string& value) {
    const std::string path = sysctl_path(key);
    if (own_procfs_ && (!root_ || writes_ >= kRenewAfter)) {
        root_ = own_procfs();
        writes_ = 0;
        own_procfs_ = static_cast<bool>(root_);
    }
    ++writes_;
    // "/proc/sys/..." relative to the instance's root is "sys/...".
    constexpr std::size_t kProc = sizeof "/proc/" - 1;
    UniqueFd fd(root_ ? ::openat(root_.get(), path.c_str() + kProc, O_WRONLY | O_CLOEXEC | O_NOFOLLOW)
                      : ::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) throw_last_errno(describe_write(key, value));
    write_all(fd.get(), value, describe_write(key, value));
}

std::string sysctl_read_here(const std::string& key) {
    const std::string path = sysctl_path(key);
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) throw_last_errno("sysctl " + key + ": reading");
    std::string out;
    char buf[512];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_last_errno("sysctl " + key + ": reading");
        }
        if (n == 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
}

}  // namespace labctl::rtnl
