#pragma once
// Named network namespaces the iproute2 way (files under /run/netns, bind mounts of
// nsfs), handles to them, and running code inside one.
//
// Kernel facts relied on:
// - setns()/unshare(CLONE_NEWNET) change only the calling thread; sockets and
//   /dev/net/tun opened there belong to that thread's namespace for good.
// - A namespace lives while something refers to it: the bind mount, an open fd, a
//   process inside. Unmounting and unlinking the name is quick; the kernel frees the
//   namespace (and everything in it) later, serially.

#include <sys/types.h>

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <mutex>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "base/unique_fd.hpp"

namespace labctl::netns {

struct NetnsHandle {
    UniqueFd fd;  // O_RDONLY|O_CLOEXEC on the nsfs file; usable for setns and IFLA_NET_NS_FD
    dev_t dev = 0;
    ino_t ino = 0;
    std::string name;  // "" for a namespace not opened by name

    // Same namespace: same st_dev and st_ino of the nsfs file.
    bool same_as(const NetnsHandle& other) const noexcept { return dev == other.dev && ino == other.ino; }
};

// "/run/netns", where iproute2 keeps named namespaces.
std::string netns_dir();

// Opens the named namespace. Throws KernelError (ENOENT when there is none; EINVAL for
// an invalid name or a file that is not a mounted namespace).
NetnsHandle open(const std::string& name);

// A handle to the calling thread's own namespace (/proc/thread-self/ns/net).
// Throws KernelError.
NetnsHandle open_current();

// True when /run/netns/<name> exists, mounted or not (a file left by a killed creator
// counts: it blocks create() until remove()). Throws nothing.
bool exists(const std::string& name);

// st_dev/st_ino of the mounted namespace, nullopt when there is no mounted namespace
// of that name. Throws nothing.
std::optional<std::pair<dev_t, ino_t>> identity(const std::string& name);

// Creates the named namespaces on dedicated threads (never the caller's): one for
// small batches, up to one per CPU (at most 4) for large ones, each making every k-th
// name. Per name, the file is made with O_EXCL, the thread unshare()s a new namespace
// and bind-mounts it onto the file. /run/netns is made a shared mount once, under an
// flock on the directory, as iproute2 does. `inside`, when given, runs on the creating
// thread right after namespace i was made, while the thread is still inside it (open
// sockets or TAPs there without another setns); calls for different i may run at the
// same time, so `inside` must only touch what belongs to index i.
// The handles come back in the order of `names`.
// On any failure every namespace made by this call is removed again (an existing
// file is never touched) and KernelError is thrown, e.g.
// `namespace "lab-h1": creating /run/netns/lab-h1: File exists (EEXIST)`; an
// exception thrown by `inside` is rethrown as is after the same cleanup.
// Names: non-empty, no '/', not "." or "..", at most 255 bytes (EINVAL otherwise).
std::vector<NetnsHandle> create_many(const std::vector<std::string>& names,
                                     const std::function<void(std::size_t index)>& inside = {});

// create_many({name}).front(). Throws KernelError.
NetnsHandle create(const std::string& name);

// Unmounts (MNT_DETACH) and unlinks /run/netns/<name>. A missing name is not an error
// (idempotent); EBUSY is retried a few times. Throws KernelError.
void remove(const std::string& name);

// remove() of every name, on as many threads as create_many would use: each unmount
// mostly waits for an RCU grace period, and the waits of different threads overlap.
// Returns the failures (what() of each, naming the namespace), in no particular order;
// every name is attempted. Throws nothing else.
std::vector<std::string> remove_many(const std::vector<std::string>& names);

namespace detail {
// Runs `fn` on a new thread that first joins the namespace of `fd`; rethrows in the
// caller whatever fn (or setns) threw.
void run_on_thread_in(int fd, const std::function<void()>& fn);
}  // namespace detail

// Runs `fn` on a fresh thread that has setns()'d into `ns`, waits, returns its result
// or rethrows its exception. The caller's thread never changes namespace.
// Throws KernelError when setns fails, and whatever fn throws.
template <class F>
auto run_in(const NetnsHandle& ns, F&& fn) -> std::invoke_result_t<F&> {
    using R = std::invoke_result_t<F&>;
    if constexpr (std::is_void_v<R>) {
        detail::run_on_thread_in(ns.fd.get(), [&] { fn(); });
    } else {
        std::optional<R> result;
        detail::run_on_thread_in(ns.fd.get(), [&] { result.emplace(fn()); });
        return std::move(*result);
    }
}

// Runs fn(i) for each namespace in turn on ONE new thread that setns()'s into
// namespaces[i] before each call: cheap for opening a socket in each of many
// namespaces. Stops at and rethrows the first exception. Throws KernelError when a
// setns fails.
void run_in_each(const std::vector<const NetnsHandle*>& namespaces, const std::function<void(std::size_t)>& fn);

// A thread living inside one namespace, running jobs one at a time: for repeated work
// in the same namespace without a new thread (and setns) per call.
class NetnsWorker {
public:
    // Starts the thread and joins it to `ns`. Throws KernelError when setns fails.
    explicit NetnsWorker(const NetnsHandle& ns);
    NetnsWorker(const NetnsWorker&) = delete;
    NetnsWorker& operator=(const NetnsWorker&) = delete;
    // Lets queued jobs finish, then ends the thread.
    ~NetnsWorker();

    // Runs `fn` on the worker, waits, returns its result or rethrows its exception.
    // Safe to call from several threads (jobs run one after another).
    template <class F>
    auto run(F&& fn) -> std::invoke_result_t<F&> {
        using R = std::invoke_result_t<F&>;
        if constexpr (std::is_void_v<R>) {
            run_job([&] { fn(); });
        } else {
            std::optional<R> result;
            run_job([&] { result.emplace(fn()); });
            return std::move(*result);
        }
    }

private:
    struct Job {
        const std::function<void()>* fn;
        std::exception_ptr failure;
        bool done = false;
    };
    void run_job(const std::function<void()>& fn);
    void loop();

    std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable finished_;
    std::deque<Job*> jobs_;
    bool stop_ = false;
    std::thread thread_;
};

}  // namespace labctl::netns
