// Captured, interactive and daemon runs: what the parent does around spawn().

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "proc/io.hpp"
#include "proc/pidfd.hpp"
#include "proc/proc.hpp"
#include "proc/spawn.hpp"

namespace labctl::proc {

namespace {

using Clock = std::chrono::steady_clock;
using detail::above_stdio;
using detail::decode;
using detail::make_pipe;
using detail::open_dev_null;
using detail::set_nonblocking;
using detail::wait_status;

// Writing to a pipe whose reader has gone raises SIGPIPE, which would kill a CLI. It is
// blocked in this thread while we feed stdin, and one we caused is swallowed.
class SigpipeBlocked {
public:
    SigpipeBlocked() {
        ::sigemptyset(&set_);
        ::sigaddset(&set_, SIGPIPE);
        sigset_t old;
        ::pthread_sigmask(SIG_BLOCK, &set_, &old);
        was_blocked_ = ::sigismember(&old, SIGPIPE) == 1;
        sigset_t pending;
        ::sigpending(&pending);
        was_pending_ = ::sigismember(&pending, SIGPIPE) == 1;
    }
    ~SigpipeBlocked() {
        if (!was_pending_) {
            const timespec zero{};
            while (::sigtimedwait(&set_, nullptr, &zero) == SIGPIPE) {}
        }
        if (!was_blocked_) ::pthread_sigmask(SIG_UNBLOCK, &set_, nullptr);
    }
    SigpipeBlocked(const SigpipeBlocked&) = delete;
    SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

private:
    sigset_t set_;
    bool was_blocked_ = false;
    bool was_pending_ = false;
};

// Kills and reaps a child we are about to lose track of because of an exception.
class ChildGuard {
public:
    explicit ChildGuard(pid_t pid, bool own_group) : pid_(pid), own_group_(own_group) {}
    ~ChildGuard() {
        if (pid_ <= 0) return;
        ::kill(own_group_ ? -pid_ : pid_, SIGKILL);
        wait_status(pid_);
    }
    void release() { pid_ = -1; }
    ChildGuard(const ChildGuard&) = delete;
    ChildGuard& operator=(const ChildGuard&) = delete;

private:
    pid_t pid_;
    bool own_group_;
};

// Reads until the pipe is empty (or at EOF, then closes it).
// At most `limit` bytes per call, so that a fast writer cannot keep us here (nor grow
// `into` without bound between two trims); true when it stopped at the limit.
bool drain_some(UniqueFd& fd, std::string& into, std::size_t limit = 1u << 20) {
    char buf[65536];
    std::size_t got = 0;
    while (fd) {
        if (got >= limit) return true;
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n > 0) {
            into.append(buf, static_cast<std::size_t>(n));
            got += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n == 0 || errno != EAGAIN) fd.reset();
        return false;
    }
    return false;
}

// With a bound: once out or err holds more than `above` bytes, only its last `keep`
// remain (trimming in steps of `keep` keeps the copying linear).
void keep_tail(RunResult& r, std::size_t keep, std::size_t above) {
    if (keep == 0) return;
    for (std::string* s : {&r.out, &r.err}) {
        if (s->size() <= above) continue;
        const std::size_t drop = s->size() - keep;
        s->erase(0, drop);
        r.dropped += drop;
    }
}

}  // namespace

RunResult run(const Command& command, const std::optional<std::string>& input,
              std::optional<std::chrono::milliseconds> timeout, const std::atomic<bool>* cancel,
              std::size_t max_output) {
    const std::string what = detail::describe(command);
    UniqueFd in_read, in_write, out_read, out_write, err_read, err_write;
    if (input) {
        make_pipe(in_read, in_write, what);
    } else {
        in_read = open_dev_null(O_RDONLY, what);
    }
    make_pipe(out_read, out_write, what);
    make_pipe(err_read, err_write, what);

    SigpipeBlocked no_sigpipe;
    const auto child =
        detail::spawn(command, detail::Mode::captured, {in_read.get(), out_write.get(), err_write.get()});
    ChildGuard guard(child.pid, true);
    const auto started = Clock::now();
    in_read.reset();
    out_write.reset();
    err_write.reset();

    UniqueFd pidfd(detail::pidfd_open(child.pid));
    if (!pidfd) throw_last_errno(what + ": opening a pidfd");

    std::size_t written = 0;
    if (in_write) {
        if (input->empty()) {
            in_write.reset();
        } else {
            set_nonblocking(in_write.get(), what);
        }
    }
    set_nonblocking(out_read.get(), what);
    set_nonblocking(err_read.get(), what);

    RunResult result;
    // A plain time point (GCC 12 sees an optional's value as maybe uninitialized here).
    const bool has_deadline = timeout.has_value();
    const Clock::time_point deadline = has_deadline ? started + *timeout : Clock::time_point::max();
    for (;;) {
        pollfd fds[4];
        int count = 0;
        auto add = [&](const UniqueFd& fd, short events) {
            if (!fd) return -1;
            fds[count] = pollfd{fd.get(), events, 0};
            return count++;
        };
        const int child_slot = add(pidfd, POLLIN);
        const int out_slot = add(out_read, POLLIN);
        const int err_slot = add(err_read, POLLIN);
        const int in_slot = add(in_write, POLLOUT);

        int wait_ms = -1;
        if (has_deadline && !result.timed_out) {
            const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
            wait_ms = static_cast<int>(std::max<long long>(0, left.count()));
        }
        // A signal may come just before poll(): look at the flag at least this often.
        constexpr int kCancelCheckMs = 100;
        if (cancel) wait_ms = wait_ms < 0 ? kCancelCheckMs : std::min(wait_ms, kCancelCheckMs);
        const int ready = ::poll(fds, static_cast<nfds_t>(count), wait_ms);
        if (ready < 0 && errno != EINTR) throw_last_errno(what + ": waiting for the command");
        if (cancel && cancel->load()) {
            ::kill(-child.pid, SIGKILL);
            wait_status(child.pid);
            guard.release();
            throw LabError(what + ": interrupted", EINTR);
        }
        if (ready < 0) continue;
        const bool exited = child_slot >= 0 && (fds[child_slot].revents & POLLIN);
        if (!exited && has_deadline && !result.timed_out && Clock::now() >= deadline) {
            // The child leads its process group (setpgid in spawn), so this also reaches
            // what it started, unless that left the group.
            ::kill(-child.pid, SIGKILL);
            result.timed_out = true;
        }
        if (out_slot >= 0 && fds[out_slot].revents != 0) drain_some(out_read, result.out);
        if (err_slot >= 0 && fds[err_slot].revents != 0) drain_some(err_read, result.err);
        keep_tail(result, max_output, 2 * max_output);
        if (in_slot >= 0 && fds[in_slot].revents != 0) {
            const ssize_t n = ::write(in_write.get(), input->data() + written, input->size() - written);
            if (n > 0) written += static_cast<std::size_t>(n);
            // EPIPE: the command stopped reading, which is its business.
            if ((n < 0 && errno != EAGAIN && errno != EINTR) || written == input->size()) in_write.reset();
        }
        if (child_slot >= 0 && (fds[child_slot].revents & POLLIN)) break;
    }

    const int status = wait_status(child.pid);
    guard.release();
    if (status < 0) throw_last_errno(what + ": collecting the exit status");
    // Whatever it wrote before exiting is in the pipes now. Anything that it left
    // running in the background may keep them open; we do not wait for that.
    // What is in the pipes now, not what a background writer adds forever.
    for (int i = 0; i < 16 && drain_some(out_read, result.out); ++i) keep_tail(result, max_output, 2 * max_output);
    for (int i = 0; i < 16 && drain_some(err_read, result.err); ++i) keep_tail(result, max_output, 2 * max_output);
    keep_tail(result, max_output, max_output);
    result.returncode = decode(status);
    return result;
}

int run_interactive(const Command& command) {
    const std::string what = detail::describe(command);
    sigset_t forwarded;
    ::sigemptyset(&forwarded);
    for (const int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::sigaddset(&forwarded, sig);
    // Blocked before the fork, so none is lost or kills us in between; the child
    // unblocks everything before exec.
    sigset_t old;
    ::pthread_sigmask(SIG_BLOCK, &forwarded, &old);
    struct MaskRestore {
        sigset_t mask;
        ~MaskRestore() { ::pthread_sigmask(SIG_SETMASK, &mask, nullptr); }
    } restore{old};

    UniqueFd signals(::signalfd(-1, &forwarded, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!signals) throw_last_errno(what + ": creating a signalfd");
    signals = above_stdio(std::move(signals), what);

    const auto child = detail::spawn(command, detail::Mode::interactive, {});
    ChildGuard guard(child.pid, false);
    UniqueFd pidfd(detail::pidfd_open(child.pid));
    if (!pidfd) throw_last_errno(what + ": opening a pidfd");

    auto forward_pending = [&](bool deliver) {
        signalfd_siginfo info;
        while (::read(signals.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
            // SI_KERNEL: sent by the terminal to the whole foreground process group,
            // which the child is in; it has its own copy already.
            if (deliver && info.ssi_code != SI_KERNEL)
                detail::pidfd_send_signal(pidfd.get(), static_cast<int>(info.ssi_signo));
        }
    };
    for (;;) {
        pollfd fds[2] = {{pidfd.get(), POLLIN, 0}, {signals.get(), POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            throw_last_errno(what + ": waiting for the command");
        }
        if (fds[1].revents & POLLIN) forward_pending(true);
        if (fds[0].revents & POLLIN) break;
    }
    const int status = wait_status(child.pid);
    guard.release();
    if (status < 0) throw_last_errno(what + ": collecting the exit status");
    forward_pending(false);  // meant for the child, which is gone
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 255;
}

ProcessId start_daemon(const Command& command, const std::string& log_path) {
    const std::string what = detail::describe(command);
    UniqueFd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0600));
    if (!log) throw_last_errno(what + ": opening log " + log_path);
    log = above_stdio(std::move(log), what);
    UniqueFd null = open_dev_null(O_RDONLY, what);
    const std::string status_path = exit_status_path(log_path);
    // A file of its own (a new inode, not the old one truncated): the supervisor of the
    // daemon this one replaces may still be writing how that one ended, to its own file.
    if (::unlink(status_path.c_str()) != 0 && errno != ENOENT) throw_last_errno(what + ": removing " + status_path);
    UniqueFd status(::open(status_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600));
    if (!status) throw_last_errno(what + ": opening " + status_path);
    status = above_stdio(std::move(status), what);
    return detail::spawn(command, detail::Mode::daemon, {null.get(), log.get(), log.get(), status.get()}).daemon;
}

std::string exit_status_path(const std::string& log_path) { return log_path + ".exit"; }

UniqueFd open_pidfd(const ProcessId& id) {
    UniqueFd fd(detail::pidfd_open(id.pid));
    if (!fd) {
        if (errno == ESRCH) return {};
        throw_last_errno("opening a pidfd for process " + std::to_string(id.pid));
    }
    // Opened after checking would race with pid reuse; checked after opening, the pidfd
    // names the process that had the right start time (or none).
    if (!is_same_process(id)) return {};
    return fd;
}

std::optional<int> daemon_exit_status(const std::string& log_path) {
    UniqueFd fd(::open(exit_status_path(log_path).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return std::nullopt;
    char text[64];
    const ssize_t n = ::read(fd.get(), text, sizeof text - 1);
    if (n <= 0) return std::nullopt;
    text[n] = '\0';
    int value = 0;
    if (std::sscanf(text, "exit %d", &value) == 1) return value;
    if (std::sscanf(text, "signal %d", &value) == 1) return -value;
    return std::nullopt;
}

ProcessId start_child(const Command& command, const std::string& log_path) {
    const std::string what = detail::describe(command);
    UniqueFd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0600));
    if (!log) throw_last_errno(what + ": opening log " + log_path);
    log = above_stdio(std::move(log), what);
    UniqueFd null = open_dev_null(O_RDONLY, what);
    const auto child = detail::spawn(command, detail::Mode::captured, {null.get(), log.get(), log.get()});
    // Our child cannot be reaped before we read its start time: the pair belongs together.
    return ProcessId{child.pid, start_time_of(child.pid).value_or(0)};
}

}  // namespace labctl::proc
