#include "userns/keeper.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "state/state.hpp"
#include "userns/userns.hpp"

namespace labctl::userns::detail {

bool write_all(int fd, const void* data, std::size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
        ssize_t w = ::write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= static_cast<std::size_t>(w);
    }
    return true;
}

namespace {

bool write_file(const char* path, const std::string& text) {
    UniqueFd fd(::open(path, O_WRONLY | O_CLOEXEC));
    return fd && write_all(fd.get(), text.data(), text.size());
}


const char* stage_name(int stage) {
    switch (stage) {
        case kUnshareUser: return "creating a user namespace (unshare CLONE_NEWUSER)";
        case kSetgroups: return "writing /proc/self/setgroups";
        case kUidMap: return "writing /proc/self/uid_map";
        case kGidMap: return "writing /proc/self/gid_map";
        case kUnshareRest: return "creating mount, network and PID namespaces in it";
        case kFork: return "starting the keeper (fork)";
        case kMountTmpfs: return "mounting a tmpfs for the lab namespaces";
    }
    return "?";
}

// What the keeper's maker and the keeper tell the spawner, through a pipe.
struct Report {
    int pid;  // > 0 the keeper's pid (as the spawner sees it); 0 ready; -1 failed
    int stage;
    int err;
};

// In a child of the caller: its own user namespace (caller's uid and gid mapped to 0)
// with mount and network namespaces inside. Reports failures to `fd`.
bool make_namespaces(uid_t uid, gid_t gid, int fd) {
    auto fail = [&](int stage) {
        Report r{-1, stage, errno};
        write_all(fd, &r, sizeof r);
        return false;
    };
    if (::unshare(CLONE_NEWUSER) != 0) return fail(kUnshareUser);
    char map[64];
    if (!write_file("/proc/self/setgroups", "deny")) return fail(kSetgroups);
    std::snprintf(map, sizeof map, "0 %u 1", static_cast<unsigned>(uid));
    if (!write_file("/proc/self/uid_map", map)) return fail(kUidMap);
    std::snprintf(map, sizeof map, "0 %u 1", static_cast<unsigned>(gid));
    if (!write_file("/proc/self/gid_map", map)) return fail(kGidMap);
    if (::unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID) != 0) return fail(kUnshareRest);
    return true;
}

volatile sig_atomic_t g_terminate = 0;

// Whether nothing of a lab is left: no namespace on the tmpfs, no lab directory.
bool idle(int rootfd, const std::string& netns_dir) {
    if (DIR* d = ::opendir(netns_dir.c_str())) {
        bool empty = true;
        while (dirent* e = ::readdir(d))
            if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) empty = false;
        ::closedir(d);
        if (!empty) return false;
    }
    int dup = ::dup(rootfd);
    if (dup < 0) return false;
    DIR* d = ::fdopendir(dup);
    if (!d) {
        ::close(dup);
        return false;
    }
    ::rewinddir(d);
    bool none = true;
    while (dirent* e = ::readdir(d))
        if (state::is_lab_name(e->d_name)) none = false;
    ::closedir(d);
    return none;
}

// The keeper, in the mount and network namespaces made for it. Mounts the tmpfs, says
// it is ready, then sleeps, and exits once it has been idle for `idle_s` seconds and no
// labctl process holds it (LOCK_SH on .keeper.lock).
[[noreturn]] void keeper_main(int rootfd, int report_fd, const std::string& netns_dir, int idle_s) {
    if (::mount("tmpfs", netns_dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700") != 0) {
        Report r{-1, kMountTmpfs, errno};
        write_all(report_fd, &r, sizeof r);
        ::_exit(1);
    }
    // Keep only the state directory (3) and the report pipe (4); the spawner's locks and
    // everything else it had open must not live on in the keeper.
    if (::dup2(rootfd, 100) < 0 || ::dup2(report_fd, 101) < 0 || ::dup2(100, 3) < 0 || ::dup2(101, 4) < 0) ::_exit(1);
    ::syscall(SYS_close_range, 5u, ~0u, 0u);
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
        ::dup2(null, 0);
        ::dup2(null, 1);
        ::dup2(null, 2);
        if (null > 2 && null != 3 && null != 4) ::close(null);
    }
    (void)::chdir("/");
    ::prctl(PR_SET_NAME, "labctl-keeper");  // what ps -o comm and top show
    struct sigaction sa {};
    sa.sa_handler = [](int) { g_terminate = 1; };
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGHUP, &sa, nullptr);
    sigset_t all;
    sigemptyset(&all);
    ::sigprocmask(SIG_SETMASK, &all, nullptr);

    Report ready{0, 0, 0};
    write_all(4, &ready, sizeof ready);
    ::close(4);

    int idle_for = 0;
    while (!g_terminate) {
        timespec second{1, 0};
        ::nanosleep(&second, nullptr);
        // The init of the daemons' PID namespace: it reaps those whose supervisor died.
        while (::waitpid(-1, nullptr, WNOHANG) > 0) {}
        idle_for = idle(3, netns_dir) ? idle_for + 1 : 0;
        if (idle_for < idle_s) continue;
        int lock = ::openat(3, kLockFile, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (lock < 0) continue;
        // No labctl holds the keeper: none can join while we hold LOCK_EX, so checking
        // once more and removing the pid file leaves no window.
        if (::flock(lock, LOCK_EX | LOCK_NB) == 0 && idle(3, netns_dir)) {
            ::unlinkat(3, kPidFile, 0);
            ::_exit(0);
        }
        ::close(lock);
    }
    ::unlinkat(3, kPidFile, 0);
    ::_exit(0);
}

}  // namespace

std::string failure_message(int stage, int err) {
    const std::string why = KernelError(err, stage_name(stage)).what();
    if (auto setting = disabling_setting())
        return "rootless labs need unprivileged user namespaces, which this host disables: " + *setting + " (" + why +
            ")";
    return "rootless labs need a user namespace of your own: " + why;
}

// Starts a keeper; returns its pid once its namespaces and tmpfs are ready. Throws
// LabError naming the step that failed.
pid_t spawn_keeper(int rootfd, const std::string& netns_dir, uid_t uid, gid_t gid, int idle_s) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) throw_last_errno("starting the keeper: pipe");
    UniqueFd rd(p[0]), wr(p[1]);
    pid_t maker = ::fork();
    if (maker < 0) throw_last_errno("starting the keeper: fork");
    if (maker == 0) {
        ::setsid();
        if (!make_namespaces(uid, gid, wr.get())) ::_exit(1);
        pid_t keeper = ::fork();  // PID 1 of the new PID namespace; reparented to the host's init
        if (keeper < 0) {
            Report r{-1, kFork, errno};
            write_all(wr.get(), &r, sizeof r);
            ::_exit(1);
        }
        if (keeper == 0) keeper_main(rootfd, wr.get(), netns_dir, idle_s);
        Report r{keeper, 0, 0};
        write_all(wr.get(), &r, sizeof r);
        ::_exit(0);
    }
    wr.reset();
    auto read_report = [&](Report& r) {
        std::size_t got = 0;
        while (got < sizeof r) {
            ssize_t n = ::read(rd.get(), reinterpret_cast<char*>(&r) + got, sizeof r - got);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return false;
            got += static_cast<std::size_t>(n);
        }
        return true;
    };
    Report first{}, second{};
    bool ok1 = read_report(first);
    bool ok2 = ok1 && first.pid > 0 && read_report(second);
    int status = 0;
    while (::waitpid(maker, &status, 0) < 0 && errno == EINTR) {}
    if (!ok1) throw LabError("starting the keeper: it ended without a word", ECHILD);
    if (first.pid < 0) throw LabError(failure_message(first.stage, first.err), first.err);
    if (!ok2) throw LabError("starting the keeper: it ended before it was ready", ECHILD);
    if (second.pid < 0) throw LabError(failure_message(second.stage, second.err), second.err);
    return first.pid;
}

}  // namespace labctl::userns::detail
