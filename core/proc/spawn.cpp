// Starting a child inside a network namespace with Boost.Process.
//
// Which Boost: Debian 12's default libboost-dev (1.74) and Boost.Process v1, the only
// API it has. v1 forks and execs itself and lets an initializer run code in the child
// between the two (`on_exec_setup`, the documented `extend::handler` extension point);
// that is where the child enters the namespace. It reports execve() failures to the
// parent through a close-on-exec pipe of its own, and it needs no compiled Boost
// library as long as no boost::filesystem::path is used (we pass std::string). v2
// (1.81's libboost1.81-dev, header <boost/process/v2>) is built on posix_spawn-like
// launchers with their own hooks; nothing it offers is needed here, so we stay on the
// default package.
//
// What v1 does not do and we do ourselves, in the handler below:
// - A failure in on_exec_setup is written to the parent but v1 still goes on to
//   execve(), i.e. the program would run in the wrong namespace. So the handler
//   reports failures through a pipe of ours and _exits at once.
// - No descriptor hygiene: every descriptor we own is O_CLOEXEC, and the child marks
//   all descriptors above 2 close-on-exec again (close_range) as a belt; it marks
//   rather than closes so that v1's own error pipe keeps working until execve().
// - No signal reset: dispositions and the mask are inherited through fork, and ignored
//   signals (Python ignores SIGPIPE) even through execve.
// - v1's `child` would kill a child it still owns when destroyed and may reap through
//   waitpid() behind our back, so we detach it at once and wait with a pidfd.
//
// Everything the child does between fork and execve is an async-signal-safe system
// call on data the parent prepared: the parent may have other threads (Python), and
// a lock one of them held at fork time would never be released in the child.

#include "proc/spawn.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/process/args.hpp>
#include <boost/process/child.hpp>
#include <boost/process/exe.hpp>
#include <boost/process/extend.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "netns/netns.hpp"
#include "userns/userns.hpp"

namespace labctl::proc::detail {

namespace {

namespace bp = boost::process;

// What the child tells the parent, one write() each (below PIPE_BUF, so atomic).
enum class Stage : int {
    daemon_started,  // not a failure: pid and start time of the daemon
    fork,
    pidns,
    setsid,
    setpgid,
    stdio,
    setns,
    unshare,
    make_slave,
    mount_sys,
    groups,
    setgid,
    setuid,
    chdir,
    cloexec,
    exec,
};

struct Report {
    Stage stage;
    int err;
    pid_t pid;
    unsigned long long start_time;
};

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

// Everything the child needs, prepared by the parent (the child must not allocate).
struct ChildSetup {
    Mode mode;
    Stdio stdio;
    int netns_fd;
    int report_fd;
    const char* sysfs_source;
    unsigned long sysfs_overlay_flags;
    const std::vector<std::pair<std::string, std::string>>* etc_binds;
    char* const* argv;  // null-terminated; argv[0] as the caller gave it
    char** envp;        // null-terminated
    const Account* account;  // null: stay who we are
    const char* cwd;         // null: stay where we are
    int pidns_fd;            // rootless: daemons run in the keeper's PID namespace; -1: stay
};

void report(int fd, const Report& r) {
    while (::write(fd, &r, sizeof r) < 0 && errno == EINTR) {
    }
}

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
    unsigned value = WIFSIGNALED(status) ? static_cast<unsigned>(WTERMSIG(status))
                                         : static_cast<unsigned>(WEXITSTATUS(status));
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
    while (::write(fd, text, n) < 0 && errno == EINTR) {
    }
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
    if (::mount("", "/", "none", MS_SLAVE | MS_REC, nullptr) < 0)
        fail(rep, Stage::make_slave, errno);
    // sysfs shows the interfaces of the namespace of whoever mounted it, hence a fresh
    // instance. If the old one cannot be detached we mount over it, and a read-only one
    // can only be shadowed read-only.
    unsigned long sys_flags = 0;
    if (::umount2("/sys", MNT_DETACH) < 0) sys_flags = s.sysfs_overlay_flags;
    if (::mount(s.sysfs_source, "/sys", "sysfs", sys_flags, nullptr) < 0)
        fail(rep, Stage::mount_sys, errno);
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

class EnterNetns : public bp::extend::handler {
public:
    EnterNetns(const ChildSetup* setup, pid_t* launched) : setup_(setup), launched_(launched) {}

    template <class Executor>
    void on_exec_setup(Executor& e) const {
        enter(*setup_);
        // v1 would pass the resolved path as argv[0]; execvp (and `ip netns exec`) keep
        // the caller's. cmd_line and env are documented members of the posix executor.
        // The environment is ours to build: v1's basic_environment::find reads past its
        // buffer on a small environment (seen under `env -i`), so it is never used.
        e.cmd_line = setup_->argv;
        e.env = setup_->envp;
    }
    template <class Executor>
    void on_exec_error(Executor&, const std::error_code& ec) const {
        report(setup_->report_fd, Report{Stage::exec, ec.value(), 0, 0});
    }
    // In the parent: v1 gives the pid to these hooks even when it fails, and a failed
    // child still has to be reaped.
    template <class Executor>
    void on_success(Executor& e) const {
        *launched_ = e.pid;
    }
    template <class Executor>
    void on_error(Executor& e, const std::error_code&) const {
        *launched_ = e.pid;
    }

private:
    const ChildSetup* setup_;
    pid_t* launched_;
};

// The child's environment: the command's own, or ours with extra_env over it.
std::vector<std::string> environment_for(const Command& command) {
    if (command.environment) return *command.environment;
    std::vector<std::string> env;
    for (char** e = ::environ; e != nullptr && *e != nullptr; ++e) {
        const std::string_view entry = *e;
        const std::string key(entry.substr(0, entry.find('=')));
        if (!command.extra_env.contains(key)) env.emplace_back(entry);
    }
    for (const auto& [key, value] : command.extra_env) env.push_back(key + "=" + value);
    return env;
}

std::string find_program(const std::string& name, const std::vector<std::string>& env,
                         const std::string& what) {
    if (name.find('/') != std::string::npos) return name;  // execve reports what is wrong
    if (name.empty()) throw_errno(ENOENT, what);
    std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (const auto& entry : env)
        if (entry.starts_with("PATH=")) path = entry.substr(5);
    int err = ENOENT;
    std::string_view rest = path;
    for (;;) {
        const auto colon = rest.find(':');
        const std::string_view dir = rest.substr(0, colon);
        // An empty PATH element means the current directory (POSIX).
        const std::string candidate = dir.empty() ? name : std::string(dir) + "/" + name;
        struct stat st {};
        if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
            if (::access(candidate.c_str(), X_OK) == 0) return candidate;
            err = EACCES;  // like execvp: found, but not executable
        }
        if (colon == std::string_view::npos) break;
        rest.remove_prefix(colon + 1);
    }
    throw_errno(err, what);
}

// iproute2's bind_etc: every entry of /etc/netns/<name>/ over /etc/<entry>.
std::vector<std::pair<std::string, std::string>> etc_binds_for(const std::string& netns) {
    std::vector<std::pair<std::string, std::string>> binds;
    if (netns.empty() || netns.find('/') != std::string::npos) return binds;
    const std::string dir_path = "/etc/netns/" + netns;
    DIR* dir = ::opendir(dir_path.c_str());
    if (dir == nullptr) return binds;  // absent: nothing to bind, as in iproute2
    while (const dirent* entry = ::readdir(dir)) {
        const std::string_view name = entry->d_name;
        if (name == "." || name == "..") continue;
        binds.emplace_back(dir_path + "/" + entry->d_name, std::string("/etc/") + entry->d_name);
    }
    ::closedir(dir);
    return binds;
}

void reap(pid_t pid, int* status = nullptr) {
    int ignored = 0;
    while (::waitpid(pid, status ? status : &ignored, 0) < 0 && errno == EINTR) {
    }
}

}  // namespace

std::string describe(const Command& command) {
    const std::string& who = command.label.empty() ? command.netns : command.label;
    const std::string program = command.argv.empty() ? std::string() : command.argv.front();
    return who + ": running \"" + program + "\"";
}

bool parse_stat(const char* text, std::size_t len, char* state, unsigned long long* start_time) {
    // The command name (field 2) may hold spaces and ')', so fields are counted from
    // the last ')'. Field 3 is the state, field 22 the start time.
    std::size_t i = len;
    while (i > 0 && text[i - 1] != ')') --i;
    if (i == 0) return false;
    int field = 2;
    while (i < len && field < 22) {
        if (text[i] == ' ') {
            ++field;
            ++i;
            if (field == 3) {
                if (i >= len) return false;
                *state = text[i];
            }
            continue;
        }
        ++i;
    }
    if (field != 22 || i >= len || text[i] < '0' || text[i] > '9') return false;
    unsigned long long value = 0;
    while (i < len && text[i] >= '0' && text[i] <= '9') value = value * 10 + (text[i++] - '0');
    *start_time = value;
    return true;
}

Spawned spawn(const Command& command, Mode mode, const Stdio& stdio) {
    const std::string what = describe(command);
    if (command.argv.empty()) {
        throw LabError((command.label.empty() ? command.netns : command.label) +
                       ": running a command: empty argv");
    }
    for (const int fd : {stdio.in, stdio.out, stdio.err}) {
        if (fd >= 0 && fd <= 2) throw LabError(what + ": stdio descriptor " + std::to_string(fd) +
                                               " would be clobbered (internal error)");
    }
    std::vector<std::string> env_text = environment_for(command);
    const std::string exe = find_program(command.argv.front(), env_text, what);
    // The child's argv, set in the child (see EnterNetns). Not given to v1 as bp::args:
    // it takes &arg.front() of every argument, undefined for an empty one.
    std::vector<std::string> argv_text = command.argv;
    std::vector<char*> argv;
    for (auto& arg : argv_text) argv.push_back(arg.data());
    argv.push_back(nullptr);

    std::vector<char*> envp;
    for (auto& entry : env_text) envp.push_back(entry.data());
    envp.push_back(nullptr);

    UniqueFd owned_netns;
    int netns_fd = command.netns_fd;
    if (netns_fd < 0) {
        const std::string path = netns::netns_dir() + "/" + command.netns;
        if (command.netns.empty() || command.netns.find('/') != std::string::npos)
            throw LabError(what + ": invalid namespace name \"" + command.netns + "\"");
        owned_netns.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!owned_netns) throw_last_errno(what + ": opening " + path);
        netns_fd = owned_netns.get();
    }

    struct statvfs sys {};
    const unsigned long overlay_flags =
        (::statvfs("/sys", &sys) == 0 && (sys.f_flag & ST_RDONLY)) ? MS_RDONLY : 0;
    const auto binds = etc_binds_for(command.netns);

    int report_pipe[2];
    if (::pipe2(report_pipe, O_CLOEXEC) < 0) throw_last_errno(what + ": creating a pipe");
    UniqueFd report_read(report_pipe[0]);
    UniqueFd report_write(report_pipe[1]);

    const ChildSetup setup{mode,
                           stdio,
                           netns_fd,
                           report_write.get(),
                           command.netns.c_str(),
                           overlay_flags,
                           &binds,
                           argv.data(),
                           envp.data(),
                           command.account ? &*command.account : nullptr,
                           command.cwd.empty() ? nullptr : command.cwd.c_str(),
                           userns::pidns_fd()};
    pid_t launched = -1;
    std::error_code ec;
    {
        bp::child child(bp::exe = exe, EnterNetns(&setup, &launched), ec);
        child.detach();  // we wait with a pidfd; see the top of this file
    }
    report_write.reset();

    // Until EOF: the write ends close when the child (and, for a daemon, the
    // intermediate and the daemon) exec or exit.
    std::optional<Report> failure;
    std::optional<Report> started;
    for (;;) {
        Report r{};
        const ssize_t n = ::read(report_read.get(), &r, sizeof r);
        if (n < 0 && errno == EINTR) continue;
        if (n != static_cast<ssize_t>(sizeof r)) break;
        if (r.stage == Stage::daemon_started) {
            started = r;
        } else {
            failure = r;
        }
    }

    if (launched > 0 && (mode == Mode::daemon || failure || ec)) reap(launched);
    if (failure) {
        const char* step = stage_text(failure->stage);
        throw_errno(failure->err, step ? what + ": " + step : what);
    }
    if (ec) {
        throw_errno(ec.value(), launched > 0 ? what : what + ": forking");
    }
    Spawned spawned;
    spawned.pid = launched;
    if (mode == Mode::daemon) {
        if (!started) throw LabError(what + ": the daemon's pid was not reported");
        spawned.daemon = ProcessId{started->pid, started->start_time};
    }
    return spawned;
}

}  // namespace labctl::proc::detail

namespace labctl::proc {

Account resolve_user(const std::string& user) {
    struct passwd pw {};
    struct passwd* found = nullptr;
    std::vector<char> buf(16384);
    const bool numeric = !user.empty() && user.find_first_not_of("0123456789") == std::string::npos;
    Account a;
    if (numeric) {
        errno = 0;
        const unsigned long long uid = std::strtoull(user.c_str(), nullptr, 10);
        if (errno != 0 || uid >= static_cast<unsigned long long>(static_cast<uid_t>(-1)))
            throw LabError("user " + user + ": not a valid uid");
        a.uid = static_cast<uid_t>(uid);
        ::getpwuid_r(a.uid, &pw, buf.data(), buf.size(), &found);
    } else {
        ::getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found);
        if (!found) throw LabError("no user \"" + user + "\" on this host");
    }
    if (!found) {
        a.gid = static_cast<gid_t>(a.uid);
        a.groups = {a.gid};
        a.home = "/";
        return a;
    }
    a.uid = pw.pw_uid;
    a.gid = pw.pw_gid;
    a.home = pw.pw_dir && *pw.pw_dir ? pw.pw_dir : "/";
    int count = 64;
    for (;;) {
        a.groups.assign(static_cast<std::size_t>(count), 0);
        int n = count;
        if (::getgrouplist(pw.pw_name, pw.pw_gid, a.groups.data(), &n) >= 0) {
            a.groups.resize(static_cast<std::size_t>(n));
            break;
        }
        if (n <= count) n = count * 2;
        count = n;
    }
    return a;
}

}  // namespace labctl::proc
