#include "netns/netns.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>

#include "base/error.hpp"
#include "base/scope_guard.hpp"

namespace labctl::netns {

namespace {

std::string what(const std::string& name) { return "namespace \"" + name + "\""; }

void check_name(const std::string& name) {
    if (name.empty() || name.size() > NAME_MAX || name.find('/') != std::string::npos || name == "." ||
        name == "..")
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
    if (!is_nsfs(fd.get()))
        throw KernelError(EINVAL, context, "not a mounted network namespace (leftover file?)");
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

std::string netns_dir() { return "/run/netns"; }

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
    struct statfs sfs {};
    if (::stat(path.c_str(), &st) != 0 || ::statfs(path.c_str(), &sfs) != 0) return std::nullopt;
    if (sfs.f_type != static_cast<decltype(sfs.f_type)>(NSFS_MAGIC)) return std::nullopt;
    return std::make_pair(st.st_dev, st.st_ino);
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

std::vector<NetnsHandle> create_many(const std::vector<std::string>& names,
                                     const std::function<void(std::size_t)>& inside) {
    for (const auto& name : names) check_name(name);
    prepare_dir();

    const std::size_t count = names.size();
    std::vector<std::optional<NetnsHandle>> made(count);
    std::vector<char> file_made(count, 0);  // files this call made, to undo on failure
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
                {
                    UniqueFd f(::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0));
                    if (!f) throw_last_errno(what(name) + ": creating " + path);
                }
                file_made[i] = 1;
                if (::unshare(CLONE_NEWNET) != 0) throw_last_errno(what(name) + ": unshare(CLONE_NEWNET)");
                const std::string self = "/proc/self/task/" + std::to_string(::gettid()) + "/ns/net";
                if (::mount(self.c_str(), path.c_str(), "none", MS_BIND, nullptr) != 0)
                    throw_last_errno(what(name) + ": bind-mounting " + self + " onto " + path);
                UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
                if (!fd) throw_last_errno(what(name) + ": opening " + path);
                made[i] = handle_from_fd(std::move(fd), name, what(name) + ": opening " + path);
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
        made.clear();
        std::vector<std::string> undo;
        for (std::size_t i = 0; i < count; ++i)
            if (file_made[i]) undo.push_back(names[i]);
        // The original failure is what the caller must see; a name we could not remove
        // shows up in `ip netns list` and in the next create's EEXIST.
        remove_many(undo);
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
    for (int attempt = 0;; ++attempt) {
        // EINVAL: not a mount point (a file left before its bind mount); ENOENT: gone.
        if (::umount2(path.c_str(), MNT_DETACH) == 0 || errno == EINVAL || errno == ENOENT) break;
        if (errno != EBUSY || attempt >= 5) throw_last_errno(what(name) + ": unmounting " + path);
        std::this_thread::sleep_for(std::chrono::milliseconds(10 << attempt));
    }
    for (int attempt = 0;; ++attempt) {
        if (::unlink(path.c_str()) == 0 || errno == ENOENT) return;
        if (errno != EBUSY || attempt >= 5) throw_last_errno(what(name) + ": removing " + path);
        std::this_thread::sleep_for(std::chrono::milliseconds(10 << attempt));
    }
}

std::vector<std::string> remove_many(const std::vector<std::string>& names) {
    std::vector<std::string> failures;
    std::mutex failures_mutex;
    auto work = [&](std::size_t first, std::size_t stride) {
        for (std::size_t i = first; i < names.size(); i += stride) {
            try {
                remove(names[i]);
            } catch (const std::exception& e) {
                std::lock_guard lock(failures_mutex);
                failures.push_back(e.what());
            }
        }
    };
    const std::size_t workers = worker_threads(names.size());
    {
        std::vector<std::jthread> threads;
        threads.reserve(workers - 1);
        try {
            for (std::size_t k = 1; k < workers; ++k) threads.emplace_back(work, k, workers);
        } catch (const std::system_error&) {
            // Fewer threads than planned: this one takes the names of those never started.
            for (std::size_t k = threads.size() + 1; k < workers; ++k) work(k, workers);
        }
        work(0, workers);
    }  // the other threads have joined here, before `failures` is read
    return failures;
}

namespace detail {

void run_on_thread_in(int fd, const std::function<void()>& fn) {
    std::exception_ptr failure;
    std::thread worker([&] {
        try {
            if (::setns(fd, CLONE_NEWNET) != 0) throw_last_errno("setns into network namespace");
            fn();
        } catch (...) {
            failure = std::current_exception();
        }
    });
    worker.join();
    if (failure) std::rethrow_exception(failure);
}

}  // namespace detail

void run_in_each(const std::vector<const NetnsHandle*>& namespaces, const std::function<void(std::size_t)>& fn) {
    std::exception_ptr failure;
    std::thread worker([&] {
        try {
            for (std::size_t i = 0; i < namespaces.size(); ++i) {
                const NetnsHandle& ns = *namespaces[i];
                if (::setns(ns.fd.get(), CLONE_NEWNET) != 0)
                    throw_last_errno(ns.name.empty() ? std::string("setns") : what(ns.name) + ": setns");
                fn(i);
            }
        } catch (...) {
            failure = std::current_exception();
        }
    });
    worker.join();
    if (failure) std::rethrow_exception(failure);
}

NetnsWorker::NetnsWorker(const NetnsHandle& ns) {
    std::exception_ptr failure;
    bool started = false;
    // `failure` and `started` live in this constructor: the thread touches them only
    // until it has reported, under the lock.
    thread_ = std::thread([this, fd = ns.fd.get(), name = ns.name, &failure, &started] {
        bool joined = ::setns(fd, CLONE_NEWNET) == 0;
        const int err = errno;
        {
            std::lock_guard lock(mutex_);
            if (!joined) failure = std::make_exception_ptr(
                             KernelError(err, name.empty() ? std::string("setns") : what(name) + ": setns"));
            started = true;
            finished_.notify_all();
        }
        if (joined) loop();
    });
    std::unique_lock lock(mutex_);
    finished_.wait(lock, [&] { return started; });
    if (failure) {
        lock.unlock();
        thread_.join();
        std::rethrow_exception(failure);
    }
}

NetnsWorker::~NetnsWorker() {
    {
        std::lock_guard lock(mutex_);
        stop_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void NetnsWorker::loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
        wake_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stop_ and nothing left
        Job* job = jobs_.front();
        jobs_.pop_front();
        lock.unlock();
        try {
            (*job->fn)();
        } catch (...) {
            job->failure = std::current_exception();
        }
        lock.lock();
        job->done = true;
        finished_.notify_all();
    }
}

void NetnsWorker::run_job(const std::function<void()>& fn) {
    Job job{&fn, nullptr, false};
    std::unique_lock lock(mutex_);
    jobs_.push_back(&job);
    wake_.notify_one();
    finished_.wait(lock, [&] { return job.done; });
    if (job.failure) std::rethrow_exception(job.failure);
}

}  // namespace labctl::netns
