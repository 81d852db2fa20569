// The child's side of spawn(): entering the namespace, a private mount namespace with a
// fresh /sys, the account and working directory, descriptor and signal hygiene, the
// daemon's supervisor, and reporting a failure to the parent (child.hpp, spawn.cpp).

#include "proc/child.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace labctl::proc::detail {

const char* stage_text(Stage stage) {
    switch (stage) {
        case Stage::fork: return "forking the daemon";
        case Stage::pidns: return "entering the keeper's PID namespace (rootless)";
        case Stage::setsid: return "starting a session";
        case Stage::setpgid: return "creating a process group";
        case Stage::stdio: return "setting up stdin/stdout/stderr";
        case Stage::setns: return "entering the network namespace";
        case Stage::unshare: return "creating a mount namespace";
        case Stage::make_slave: return "making / a slave mount";
        case Stage::mount_sys: return "mounting /sys";
        case Stage::groups: return "setting the supplementary groups";
        case Stage::setgid: return "setting the group id";
        case Stage::setuid: return "setting the user id";
        case Stage::chdir: return "entering the working directory";
        case Stage::cloexec: return "marking inherited descriptors close-on-exec";
        case Stage::exec:
        case Stage::daemon_started: return nullptr;
    }
    return nullptr;
}

void report(int fd, const Report& r) {
    while (::write(fd, &r, sizeof r) < 0 && errno == EINTR) {}
}

namespace {

[[noreturn]] void fail(int fd, Stage stage, int err) {
    report(fd, Report{stage, err, 0, 0});
    ::_exit(127);
}

// "/proc/<pid>/stat" into buf without snprintf (not async-signal-safe).
void stat_path(pid_t pid, char (&buf)[64]) {
    char digits[24];
    int n = 0;
    auto value = static_cast<unsigned long>(pid);
    do {
        digits[n++] = static_cast<char>('0' + value % 10);
        value /= 10;
    } while (value != 0);
    char* p = buf;
    for (const char* s = "/proc/"; *s; ++s) *p++ = *s;
    while (n > 0) *p++ = digits[--n];
    for (const char* s = "/stat"; *s; ++s) *p++ = *s;
    *p = '\0';
}

unsigned long long read_start_time(pid_t pid) {
    char path[64];
    stat_path(pid, path);
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char text[4096];
    ssize_t n;
    do {
        n = ::read(fd, text, sizeof text);
    } while (n < 0 && errno == EINTR);
    ::close(fd);
    char state = 0;
    unsigned long long start = 0;
    if (n <= 0 || !parse_stat(text, static_cast<std::size_t>(n), &state, &start)) return 0;
    return start;
}

// close_range(CLOSE_RANGE_CLOEXEC) needs Linux 5.11; older kernels get a walk of
// /proc/self/fd with raw getdents64 (opendir() allocates).
bool mark_cloexec_from_3() {
    if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return true;
    const int dir = ::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return false;
    alignas(8) char buf[4096];
    for (;;) {
        const long n = ::syscall(SYS_getdents64, dir, buf, sizeof buf);
        if (n <= 0) break;
        for (long off = 0; off < n;) {
            struct Dirent64 {
                unsigned long long ino;
                long long off;
                unsigned short reclen;
                unsigned char type;
                char name[1];
            };
            const auto* entry = reinterpret_cast<const Dirent64*>(buf + off);
            off += entry->reclen;
            int fd = 0;
            bool numeric = entry->name[0] != '\0';
            for (const char* c = entry->name; *c; ++c) {
                if (*c < '0' || *c > '9') numeric = false;
                fd = fd * 10 + (*c - '0');
            }
            if (numeric && fd > 2 && fd != dir) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
        }
    }
    ::close(dir);
    return true;
}

void reset_signals() {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigemptyset(&dfl.sa_mask);
    for (int sig = 1; sig < NSIG; ++sig) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;  // cannot be changed
        if (::sigaction(sig, &dfl, nullptr) == 0) continue;
        // glibc refuses its reserved signals (32, 33) with EINVAL, yet an ignored
        // disposition of theirs is inherited across exec: reset them with the raw call.
        struct {
            void* handler;
            unsigned long flags;
            void* restorer;
            unsigned long mask;
        } kernel_dfl{};  // the kernel's struct sigaction (x86-64, arm64): SIG_DFL is 0
        ::syscall(SYS_rt_sigaction, sig, &kernel_dfl, nullptr, sizeof kernel_dfl.mask);
    }
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

// "exit 3\n" or "signal 15\n" for a wait status, without snprintf.
void write_wait_status(int fd, int status) {
    char text[32];
    const char* word = WIFSIGNALED(status) ? "signal " : "exit ";
    unsigned value =
        WIFSIGNALED(status) ? static_cast<unsigned>(WTERMSIG(status)) : static_cast<unsigned>(WEXITSTATUS(status));
    std::size_t n = 0;
    for (const char* c = word; *c; ++c) text[n++] = *c;
    char digits[12];
    std::size_t d = 0;
    do {
        digits[d++] = static_cast<char>('0' + value % 10);
        value /= 10;
    } while (value != 0);
    while (d > 0) text[n++] = digits[--d];
    text[n++] = '\n';
    while (::write(fd, text, n) < 0 && errno == EINTR) {}
}

// The daemon's parent for as long as it runs: it keeps nothing of ours open (stdio on
// /dev/null, every other descriptor closed, so a caller reading our output to EOF is not
// held up), waits for the daemon and writes how it ended to the exit-status file
// (`labctl status` and the readiness wait of `up` read it). Async-signal-safe calls only.
[[noreturn]] void supervise(const ChildSetup& s, pid_t daemon) {
    ::prctl(PR_SET_NAME, "labctl-daemon", 0, 0, 0);
    reset_signals();
    for (int i = 0; i < 3; ++i) ::dup2(s.stdio.in, i);
    const int keep = s.stdio.exit_status;
    if (keep > 3) ::close_range(3, static_cast<unsigned>(keep - 1), 0);
    if (::close_range(static_cast<unsigned>(keep < 3 ? 3 : keep + 1), ~0U, 0) < 0) {
        for (int fd = 3; fd < 4096; ++fd)
            if (fd != keep) ::close(fd);
    }
    int status = 0;
    while (::waitpid(daemon, &status, 0) < 0) {
        if (errno != EINTR) ::_exit(1);
    }
    if (keep >= 0) write_wait_status(keep, status);
    ::_exit(0);
}

}  // namespace

// Runs in the child, between fork and execve. Returns only when the child is ready to
// exec; any failure is reported and ends the child.
void enter(const ChildSetup& s) {
    const int rep = s.report_fd;
    if (s.mode == Mode::daemon) {
        // The intermediate forks the supervisor and exits at once (our caller reaps it),
        // so the supervisor is adopted by init and outlives us.
        const pid_t supervisor = ::fork();
        if (supervisor < 0) fail(rep, Stage::fork, errno);
        if (supervisor > 0) ::_exit(0);
        if (::setsid() < 0) fail(rep, Stage::setsid, errno);  // away from our terminal's signals
        // Rootless: the daemon goes into the keeper's PID namespace, so that it dies with
        // the keeper (its init). Only the daemon: after this the supervisor makes no threads.
        if (s.pidns_fd >= 0 && ::setns(s.pidns_fd, CLONE_NEWPID) < 0) fail(rep, Stage::pidns, errno);
        const pid_t pid = ::fork();
        if (pid < 0) fail(rep, Stage::fork, errno);
        if (pid > 0) {
            // The supervisor: the daemon is its child and cannot be reaped before it
            // waits, so its pid and start time read here belong together.
            report(rep, Report{Stage::daemon_started, 0, pid, read_start_time(pid)});
            supervise(s, pid);
        }
        if (::setsid() < 0) fail(rep, Stage::setsid, errno);
    } else if (s.mode == Mode::captured) {
        if (::setpgid(0, 0) < 0) fail(rep, Stage::setpgid, errno);
    }
    reset_signals();

    // The parent made sure these are above 2, so one dup2 cannot clobber another.
    const int targets[3] = {s.stdio.in, s.stdio.out, s.stdio.err};
    for (int i = 0; i < 3; ++i) {
        if (targets[i] >= 0 && ::dup2(targets[i], i) < 0) fail(rep, Stage::stdio, errno);
    }

    // The same steps as `ip netns exec` (iproute2's lib/namespace.c).
    if (::setns(s.netns_fd, CLONE_NEWNET) < 0) fail(rep, Stage::setns, errno);
    if (::unshare(CLONE_NEWNS) < 0) fail(rep, Stage::unshare, errno);
    if (::mount("", "/", "none", MS_SLAVE | MS_REC, nullptr) < 0) fail(rep, Stage::make_slave, errno);
    // sysfs shows the interfaces of the namespace of whoever mounted it, hence a fresh
    // instance. If the old one cannot be detached we mount over it, and a read-only one
    // can only be shadowed read-only.
    unsigned long sys_flags = 0;
    if (::umount2("/sys", MNT_DETACH) < 0) sys_flags = s.sysfs_overlay_flags;
    if (::mount(s.sysfs_source, "/sys", "sysfs", sys_flags, nullptr) < 0) fail(rep, Stage::mount_sys, errno);
    // iproute2 only warns when one of these fails (e.g. no /etc/<file> to bind over),
    // and so does nothing here: the command still runs.
    for (const auto& [from, to] : *s.etc_binds) {
        ::mount(from.c_str(), to.c_str(), "none", MS_BIND, nullptr);
    }

    // Privileges last: entering the namespace and mounting needed them. setuid() from
    // root to another uid clears every capability set.
    if (const Account* a = s.account) {
        if (::setgroups(a->groups.size(), a->groups.data()) < 0) fail(rep, Stage::groups, errno);
        if (::setgid(a->gid) < 0) fail(rep, Stage::setgid, errno);
        if (::setuid(a->uid) < 0) fail(rep, Stage::setuid, errno);
    }
    if (s.cwd != nullptr && ::chdir(s.cwd) < 0) fail(rep, Stage::chdir, errno);

    if (!mark_cloexec_from_3()) fail(rep, Stage::cloexec, errno);
}

}  // namespace labctl::proc::detail
