#include "netns/netns.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>

#include "base/error.hpp"
#include "base/scope_guard.hpp"
#include "netns/names.hpp"

// glibc 2.36's headers lack it (Linux 5.14).
#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace labctl::netns {

using namespace detail;

namespace detail {

std::string what(const std::string& name) { return "namespace \"" + name + "\""; }

}  // namespace detail

namespace {

void check_name(const std::string& name) {
    if (name.empty() || name.size() > NAME_MAX || name.find('/') != std::string::npos || name == "." || name == "..")
        throw KernelError(EINVAL, what(name), "invalid namespace name");
}

std::string path_of(const std::string& name) { return netns_dir() + "/" + name; }

bool is_nsfs(int fd) {
    struct statfs sfs {};
    return ::fstatfs(fd, &sfs) == 0 && sfs.f_type == static_cast<decltype(sfs.f_type)>(NSFS_MAGIC);
}

NetnsHandle handle_from_fd(UniqueFd fd, const std::string& name, const std::string& context) {
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw_last_errno(context + ": fstat");
    if (!is_nsfs(fd.get())) throw KernelError(EINVAL, context, "not a mounted network namespace (leftover file?)");
    return NetnsHandle{std::move(fd), st.st_dev, st.st_ino, name};
}

// Makes /run/netns exist and be a shared mount point, so that namespace mounts made
// under it propagate to other mount namespaces (what `ip netns add` does). The flock
// is iproute2's: parallel `mount --bind` of the directory onto itself would stack
// mounts (Debian bug 949235).
void prepare_dir() {
    static std::mutex mutex;
    static bool done = false;
    std::lock_guard lock(mutex);
    if (done) return;
    const std::string dir = netns_dir();
    if (::mkdir("/run", 0755) != 0 && errno != EEXIST) throw_last_errno("creating /run");
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) throw_last_errno("creating " + dir);
    UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dfd) throw_last_errno("opening " + dir);
    while (::flock(dfd.get(), LOCK_EX) != 0)
        if (errno != EINTR) throw_last_errno("locking " + dir);
    bool bound = false;
    while (::mount("", dir.c_str(), "none", MS_SHARED | MS_REC, nullptr) != 0) {
        // EINVAL: not a mount point yet; make it one by binding it onto itself.
        if (errno != EINVAL || bound) throw_last_errno("making " + dir + " a shared mount");
        if (::mount(dir.c_str(), dir.c_str(), "none", MS_BIND | MS_REC, nullptr) != 0)
            throw_last_errno("bind-mounting " + dir + " onto itself");
        bound = true;
    }
    done = true;  // the flock goes with dfd
}

}  // namespace

namespace {
std::string& dir_override() {
    static std::string dir;
    return dir;
}
}  // namespace

std::string netns_dir() { return dir_override().empty() ? "/run/netns" : dir_override(); }

void use_dir(const std::string& dir) { dir_override() = dir; }

NetnsHandle open(const std::string& name) {
    check_name(name);
    const std::string path = path_of(name);
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_last_errno(what(name) + ": opening " + path);
    return handle_from_fd(std::move(fd), name, what(name) + ": opening " + path);
}

NetnsHandle open_current() {
    UniqueFd fd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!fd) throw_last_errno("opening /proc/thread-self/ns/net");
    return handle_from_fd(std::move(fd), "", "opening /proc/thread-self/ns/net");
}

bool exists(const std::string& name) {
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") return false;
    struct stat st {};
    return ::lstat(path_of(name).c_str(), &st) == 0;
}

std::optional<std::pair<dev_t, ino_t>> identity(const std::string& name) {
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") return std::nullopt;
    const std::string path = path_of(name);
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!fd || ::fstat(fd.get(), &st) != 0 || !is_nsfs(fd.get())) return std::nullopt;
    return std::make_pair(st.st_dev, st.st_ino);
}

std::uint64_t cookie_here() {
    UniqueFd sock(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!sock) throw_last_errno("reading the network namespace's cookie: socket");
    std::uint64_t cookie = 0;
    socklen_t len = sizeof cookie;
    if (::getsockopt(sock.get(), SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0)
        throw_last_errno("reading the network namespace's cookie (SO_NETNS_COOKIE, Linux 5.14)");
    return cookie;
}

std::uint64_t cookie_of(int fd) {
    std::uint64_t cookie = 0;
    detail::run_on_thread_in(fd, [&] { cookie = cookie_here(); });
    return cookie;
}

namespace {

constexpr const char* kNotOurFile = "is a file labctl did not make";

// What a name holds, without the cookie (that needs a thread inside; see inspect_many).
Inspection look(const std::string& name, const NetnsIdentity& id) {
    Inspection out;
    const std::string path = path_of(name);
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return out;
        out.found = Found::foreign;
        out.why = "cannot be inspected: " + std::string(std::strerror(errno));
        return out;
    }
    out.found = Found::foreign;
    if (S_ISLNK(st.st_mode)) {
        out.why = "is a symlink";
        return out;
    }
    if (!S_ISREG(st.st_mode)) {
        out.why = "is not a regular file";
        return out;
    }
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!fd || ::fstat(fd.get(), &st) != 0) {
        out.why = "cannot be opened: " + std::string(std::strerror(errno));
        return out;
    }
    if (is_nsfs(fd.get())) {
        if (st.st_dev != id.dev || st.st_ino != id.ino || id.ino == 0) {
            out.why = "is not the one labctl created (it was replaced)";
            return out;
        }
        out.found = Found::ours;  // the cookie is compared by the caller
        out.fd = std::move(fd);
        return out;
    }
    if (id.file_ino != 0 && st.st_dev == id.file_dev && st.st_ino == id.file_ino) {
        out.found = Found::file_only;
        return out;
    }
    out.why = kNotOurFile;
    return out;
}

// Unmounts our namespace at `name` (when it is still there) and unlinks our file.
// The caller holds the namespace (an fd), so its dev/ino cannot name another meanwhile.
void remove_owned(const std::string& name, const NetnsIdentity& id) {
    const std::string path = path_of(name);
    bool unmounted = false;
    for (int attempt = 0;; ++attempt) {
        Inspection now = look(name, id);
        if (now.found == Found::absent) return;
        if (now.found == Found::file_only) break;
        if (now.found == Found::foreign) {
            // Journals of older versions have no file identity: what our own unmount
            // uncovered is the file that mount sat on.
            if (unmounted && id.file_ino == 0 && now.why == kNotOurFile) break;
            throw KernelError(EEXIST, what(name), now.why + "; left alone");
        }
        now.fd.reset();
        if (attempt > 8) throw KernelError(EBUSY, what(name) + ": unmounting " + path, "still mounted");
        if (::umount2(path.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0) {
            unmounted = true;
            continue;  // look again: a mount may have been stacked on another
        }
        if (errno == EINVAL || errno == ENOENT) continue;  // gone meanwhile
        if (errno != EBUSY || attempt >= 5) throw_last_errno(what(name) + ": unmounting " + path);
        std::this_thread::sleep_for(std::chrono::milliseconds(10 << attempt));
    }
    for (int attempt = 0;; ++attempt) {
        if (::unlink(path.c_str()) == 0 || errno == ENOENT) return;
        if (errno != EBUSY || attempt >= 5) throw_last_errno(what(name) + ": removing " + path);
        std::this_thread::sleep_for(std::chrono::milliseconds(10 << attempt));
    }
}

}  // namespace

std::vector<Inspection> inspect_many(const std::vector<std::pair<std::string, NetnsIdentity>>& recorded) {
    std::vector<Inspection> out;
    out.reserve(recorded.size());
    std::vector<const NetnsHandle*> to_check;
    std::vector<NetnsHandle> holders;
    std::vector<std::size_t> index;
    holders.reserve(recorded.size());
    for (std::size_t i = 0; i < recorded.size(); ++i) {
        const auto& [name, id] = recorded[i];
        if (name.empty() || name.size() > NAME_MAX || name.find('/') != std::string::npos || name == "." ||
            name == "..") {
            out.push_back({Found::foreign, "is not a namespace name", {}});
            continue;
        }
        out.push_back(look(name, id));
        if (out.back().found == Found::ours && id.cookie != 0) {
            holders.push_back(NetnsHandle{UniqueFd(::dup(out.back().fd.get())), id.dev, id.ino, name});
            if (!holders.back().fd) throw_last_errno(what(name) + ": dup");
            index.push_back(i);
        }
    }
    // One thread visits every namespace whose cookie was recorded.
    for (const auto& h : holders) to_check.push_back(&h);
    std::vector<std::uint64_t> cookies(to_check.size());
    run_in_each(to_check, [&](std::size_t k) { cookies[k] = cookie_here(); });
    for (std::size_t k = 0; k < index.size(); ++k) {
        const std::size_t i = index[k];
        if (cookies[k] != recorded[i].second.cookie) {
            out[i].found = Found::foreign;
            out[i].why = "is not the one labctl created (another namespace with a reused inode number)";
            out[i].fd.reset();
        }
    }
    return out;
}

std::size_t worker_threads(std::size_t count) {
    // For making and removing `count` namespaces. The kernel sets up new namespaces in
    // parallel (copy_net_ns holds pernet_ops_rwsem for reading), and removals mostly
    // wait for RCU grace periods, which overlap. Measured here on 2 CPUs: 1,000
    // namespaces with their sysctl writes made in 1.9-2.1 s on one thread, 0.95-1.1 s on
    // two, no better on four; removed in 0.32-0.43 s against 0.18-0.24 s
    // (bench/observations.md). Small batches stay on one thread.
    constexpr std::size_t kPerThreadAtLeast = 16;
    constexpr std::size_t kMaxThreads = 4;
    if (const char* forced = std::getenv("LABCTL_NETNS_THREADS"))  // for measurements
        return std::clamp<std::size_t>(std::strtoul(forced, nullptr, 10), 1, 64);
    const std::size_t cpus = std::max(1u, std::thread::hardware_concurrency());
    return std::clamp<std::size_t>(std::min(cpus, count / kPerThreadAtLeast), 1, kMaxThreads);
}

// For removing `count` namespaces: each removal is an unmount that mostly sleeps until
// an RCU grace period ends (namespace_unlock), and the kernel serves concurrent waiters
// with one grace period, so more waiters than CPUs overlap more of the waiting. Measured
// here on 2 CPUs (campus 5,000 down): 1.8-1.9 s on 16 threads, 2.8-4.8 s on 2.
std::size_t removal_threads(std::size_t count) {
    constexpr std::size_t kPerThreadAtLeast = 16;
    constexpr std::size_t kMaxThreads = 16;
    if (const char* forced = std::getenv("LABCTL_NETNS_THREADS"))  // for measurements
        return std::clamp<std::size_t>(std::strtoul(forced, nullptr, 10), 1, 64);
    return std::clamp<std::size_t>(count / kPerThreadAtLeast, 1, kMaxThreads);
}

std::vector<NetnsHandle> create_many(const std::vector<std::string>& names,
                                     const std::function<void(std::size_t)>& inside,
                                     const std::function<void(std::size_t, const NetnsIdentity&)>& before_naming) {
    for (const auto& name : names) check_name(name);
    prepare_dir();
    UniqueFd dir(::open(netns_dir().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir) throw_last_errno("opening " + netns_dir());

    const std::size_t count = names.size();
    std::vector<std::optional<NetnsHandle>> made(count);
    // Names this call gave a file (to undo on failure), with the identities behind them.
    std::vector<std::optional<NetnsIdentity>> named(count);
    std::atomic<bool> stop{false};
    std::mutex failure_mutex;
    std::exception_ptr failure;  // the first one

    // Worker k makes namespaces k, k + workers, ... unshare() moves the thread into each
    // new namespace in turn; the threads are thrown away afterwards, so no other code
    // ever runs in a namespace it did not ask for.
    auto work = [&](std::size_t first, std::size_t stride) {
        try {
            for (std::size_t i = first; i < count && !stop.load(std::memory_order_relaxed); i += stride) {
                const std::string& name = names[i];
                const std::string path = path_of(name);
                if (::unshare(CLONE_NEWNET) != 0) throw_last_errno(what(name) + ": unshare(CLONE_NEWNET)");
                NetnsHandle handle = open_current();
                handle.name = name;
                NetnsIdentity id{handle.dev, handle.ino, cookie_here(), 0, 0};
                struct stat st {};
                // The file exists, unnamed, before its identity is told; a name is
                // given only to a file whose identity was recorded.
                UniqueFd file(::openat(dir.get(), ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0));
                if (!file) throw_last_errno(what(name) + ": creating a file in " + netns_dir());
                if (::fstat(file.get(), &st) != 0) throw_last_errno(what(name) + ": fstat");
                id.file_dev = st.st_dev;
                id.file_ino = st.st_ino;
                if (before_naming) before_naming(i, id);
                const std::string tmp = "/proc/self/fd/" + std::to_string(file.get());
                if (::linkat(AT_FDCWD, tmp.c_str(), dir.get(), name.c_str(), AT_SYMLINK_FOLLOW) != 0)
                    throw_last_errno(what(name) + ": creating " + path);
                named[i] = id;
                // Mounted onto that file itself: the name is not looked up again.
                UniqueFd target(::openat(dir.get(), name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
                if (!target || ::fstat(target.get(), &st) != 0) throw_last_errno(what(name) + ": opening " + path);
                if (st.st_dev != id.file_dev || st.st_ino != id.file_ino)
                    throw KernelError(EEXIST, what(name) + ": creating " + path, "replaced while being made");
                const std::string self = "/proc/self/task/" + std::to_string(::gettid()) + "/ns/net";
                const std::string onto = "/proc/self/fd/" + std::to_string(target.get());
                if (::mount(self.c_str(), onto.c_str(), "none", MS_BIND, nullptr) != 0)
                    throw_last_errno(what(name) + ": bind-mounting " + self + " onto " + path);
                made[i] = std::move(handle);
                if (inside) inside(i);
            }
        } catch (...) {
            std::lock_guard lock(failure_mutex);
            if (!failure) failure = std::current_exception();
            stop = true;
        }
    };
    const std::size_t workers = worker_threads(count);
    {
        std::vector<std::jthread> threads;
        threads.reserve(workers);
        try {
            for (std::size_t k = 0; k < workers; ++k) threads.emplace_back(work, k, workers);
        } catch (...) {
            // No thread for the rest (std::system_error): stop those running, then undo.
            std::lock_guard lock(failure_mutex);
            if (!failure) failure = std::current_exception();
            stop = true;
        }
    }  // jthreads join here

    if (failure) {
        std::vector<std::pair<std::string, NetnsIdentity>> undo;
        for (std::size_t i = 0; i < count; ++i)
            if (named[i]) undo.emplace_back(names[i], *named[i]);
        // The original failure is what the caller must see; a name we could not remove
        // shows up in `ip netns list` and in the next create's EEXIST. The handles are
        // held until then, so no inode number is reused meanwhile.
        remove_owned_many(undo);
        made.clear();
        std::rethrow_exception(failure);
    }
    std::vector<NetnsHandle> handles;
    handles.reserve(count);
    for (auto& h : made) handles.push_back(std::move(*h));
    return handles;
}

NetnsHandle create(const std::string& name) { return std::move(create_many({name}).front()); }

void remove(const std::string& name) {
    check_name(name);
    const std::string path = path_of(name);
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
        throw KernelError(ELOOP, what(name) + ": removing " + path, "a symlink, not a namespace; left alone");
    for (int attempt = 0;; ++attempt) {
        // EINVAL: not a mount point (a file left before its bind mount); ENOENT: gone.
        if (::umount2(path.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0 || errno == EINVAL || errno == ENOENT) break;
        if (errno != EBUSY || attempt >= 5) throw_last_errno(what(name) + ": unmounting " + path);
        std::this_thread::sleep_for(std::chrono::milliseconds(10 << attempt));
    }
    for (int attempt = 0;; ++attempt) {
        if (::unlink(path.c_str()) == 0 || errno == ENOENT) return;
        if (errno != EBUSY || attempt >= 5) throw_last_errno(what(name) + ": removing " + path);
        std::this_thread::sleep_for(std::chrono::milliseconds(10 << attempt));
    }
}

namespace {

// Runs remove_one(i) for every i below `count`, on removal_threads(count) threads (this one
// among them), each taking every workers-th index. The message of each exception is
// collected; none escapes.
std::vector<std::string> remove_in_parallel(std::size_t count, const std::function<void(std::size_t)>& remove_one) {
    std::vector<std::string> failures;
    std::mutex failures_mutex;
    auto work = [&](std::size_t first, std::size_t stride) {
        for (std::size_t i = first; i < count; i += stride) {
            try {
                remove_one(i);
            } catch (const std::exception& e) {
                std::lock_guard lock(failures_mutex);
                failures.push_back(e.what());
            }
        }
    };
    const std::size_t workers = removal_threads(count);
    {
        std::vector<std::jthread> threads;
        threads.reserve(workers - 1);
        try {
            for (std::size_t k = 1; k < workers; ++k) threads.emplace_back(work, k, workers);
        } catch (const std::system_error&) {
            // Fewer threads than planned: this one takes the indexes of those never started.
            for (std::size_t k = threads.size() + 1; k < workers; ++k) work(k, workers);
        }
        work(0, workers);
    }  // the other threads have joined here, before `failures` is read
    return failures;
}

}  // namespace

std::vector<std::string> remove_many(const std::vector<std::string>& names) {
    return remove_in_parallel(names.size(), [&](std::size_t i) { remove(names[i]); });
}

std::vector<std::string> remove_owned_many(const std::vector<std::pair<std::string, NetnsIdentity>>& owned) {
    return remove_in_parallel(owned.size(), [&](std::size_t i) {
        check_name(owned[i].first);
        remove_owned(owned[i].first, owned[i].second);
    });
}

}  // namespace labctl::netns
