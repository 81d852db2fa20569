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
#include <cstdint>
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

// What makes a named namespace labctl's, recorded before its name exists and checked
// before anything carrying that name is signalled, unmounted or unlinked.
// Kernel facts: nsfs inode numbers come from an IDA and are handed out again (lowest
// free first) once a namespace is freed, so dev/ino alone names a namespace only while
// something holds it; the netns cookie (SO_NETNS_COOKIE) is never reused while the host
// runs. The file under /run/netns is a tmpfs inode of its own, under the mount.
struct NetnsIdentity {
    dev_t dev = 0;  // the namespace's nsfs file
    ino_t ino = 0;
    std::uint64_t cookie = 0;  // 0: unknown (journals of older labctl versions)
    dev_t file_dev = 0;        // the file the namespace is mounted on
    ino_t file_ino = 0;        // 0: unknown
};

// "/run/netns", where iproute2 keeps named namespaces; in a rootless process the tmpfs
// its keeper mounted in the state directory (see userns/).
std::string netns_dir();

// Makes netns_dir() `dir` ("" for /run/netns again). Call before any namespace is made.
void use_dir(const std::string& dir);

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
// of that name (a symlink there is not followed). Throws nothing.
std::optional<std::pair<dev_t, ino_t>> identity(const std::string& name);

// The netns cookie of the calling thread's namespace, and of the namespace of `fd`
// (read on a thread of its own). Throws KernelError.
std::uint64_t cookie_here();
std::uint64_t cookie_of(int fd);

// What /run/netns/<name> holds, compared with an identity labctl recorded.
enum class Found {
    absent,     // nothing of that name
    ours,       // the recorded namespace, mounted there; `fd` holds it
    file_only,  // the recorded file, nothing mounted on it (its creator was stopped)
    foreign,    // anything else: a symlink, another namespace, a file labctl did not make
};
struct Inspection {
    Found found = Found::absent;
    std::string why;  // for foreign: what is there instead
    UniqueFd fd;      // for ours: the namespace (while held, its dev/ino name it alone)
};
// Inspects each name (lstat, open with O_NOFOLLOW, dev/ino, cookie when recorded).
// Never follows a symlink, never blocks on a FIFO. Throws KernelError only when a
// cookie cannot be read.
std::vector<Inspection> inspect_many(const std::vector<std::pair<std::string, NetnsIdentity>>& recorded);

// Removes what inspect_many found ours (the mount, with UMOUNT_NOFOLLOW, then the file)
// or file_only (the file), checking the name again right before each step; anything
// else of that name is left alone. Runs on up to 16 threads (one per 16 names): each
// unmount mostly waits for an RCU grace period, and the waits of different threads overlap.
// Returns the failures (naming the namespace), every item attempted. Throws nothing else.
std::vector<std::string> remove_owned_many(const std::vector<std::pair<std::string, NetnsIdentity>>& owned);

// Creates the named namespaces on dedicated threads (never the caller's): one for
// small batches, up to one per CPU (at most 4) for large ones, each making every k-th
// name. Per name, the thread unshare()s a new namespace and makes an unnamed file in
// /run/netns (O_TMPFILE); `before_naming`, when given, sees both identities while
// nothing carries the name yet (the journal records them there); then the file gets
// its name with linkat(), which fails with EEXIST when the name exists: the kernel's
// exclusive creation decides which of two creators owns a name, across processes and
// state directories. Then the namespace is bind-mounted onto that very file (through
// an O_PATH descriptor, never a path looked up again). /run/netns is made a shared
// mount once, under an flock on the directory, as iproute2 does. `inside`, when given,
// runs on the creating thread right after namespace i was made, while the thread is
// still inside it (open sockets or TAPs there without another setns); calls for
// different i may run at the same time, so `inside` and `before_naming` must only
// touch what belongs to index i (or lock).
// The handles come back in the order of `names`.
// On any failure every namespace made by this call is removed again, by identity
// (whatever another creator put at a name is never touched) and KernelError is
// thrown, e.g. `namespace "lab-h1": creating /run/netns/lab-h1: File exists (EEXIST)`;
// an exception thrown by `inside` or `before_naming` is rethrown as is after the
// same cleanup.
// Names: non-empty, no '/', not "." or "..", at most 255 bytes (EINVAL otherwise).
std::vector<NetnsHandle> create_many(
    const std::vector<std::string>& names, const std::function<void(std::size_t index)>& inside = {},
    const std::function<void(std::size_t index, const NetnsIdentity&)>& before_naming = {});

// create_many({name}).front(). Throws KernelError.
NetnsHandle create(const std::string& name);

// Unmounts (MNT_DETACH) and unlinks /run/netns/<name>, whatever namespace it holds: for
// names the caller owns by other means (tests). labctl's labs use remove_owned_many.
// A missing name is not an error (idempotent); EBUSY is retried a few times; a symlink
// is refused (ELOOP). Throws KernelError.
void remove(const std::string& name);

// remove() of every name, on as many threads as remove_owned_many.
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
