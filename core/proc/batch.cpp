// Many captured commands at once, with timeouts and retries, from one epoll loop.

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <optional>
#include <queue>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "proc/io.hpp"
#include "proc/pidfd.hpp"
#include "proc/proc.hpp"
#include "proc/spawn.hpp"

namespace labctl::proc {

namespace {

using Clock = std::chrono::steady_clock;
using detail::decode;
using detail::drain;

constexpr auto kFirstBackoff = std::chrono::milliseconds(100);
constexpr auto kMaxBackoff = std::chrono::milliseconds(1000);

struct Running {
    pid_t pid = -1;
    UniqueFd pidfd, out, err;
};

struct JobState {
    std::optional<Running> child;
    Clock::time_point first_start, due;
    Clock::duration backoff = kFirstBackoff;
    bool started = false;  // at least one attempt began
    bool done = false;
};

struct Timer {
    Clock::time_point at;
    std::size_t job;
    auto operator<=>(const Timer&) const = default;
};

class Batch {
public:
    Batch(const std::vector<BatchJob>& jobs, std::size_t parallel)
        : jobs_(jobs), parallel_(std::max<std::size_t>(parallel, 1)), results_(jobs.size()), states_(jobs.size()) {}

    ~Batch() {
        // An exception left children running: kill and reap them (they are ours).
        for (auto& st : states_)
            if (st.child) {
                ::kill(-st.child->pid, SIGKILL);
                detail::wait_status(st.child->pid);
            }
    }
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;

    std::vector<BatchResult> run() {
        epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
        if (!epoll_) throw_last_errno("running commands: creating an epoll instance");
        const auto now = Clock::now();
        for (std::size_t j = 0; j < jobs_.size(); ++j) {
            states_[j].first_start = now;
            waiting_.push_back(j);
        }
        remaining_ = jobs_.size();
        std::vector<epoll_event> events(64);
        while (remaining_ > 0) {
            fire_timers();
            start_waiting();
            if (remaining_ == 0) break;
            int wait_ms = -1;
            if (!timers_.empty()) {
                const auto left = std::chrono::ceil<std::chrono::milliseconds>(timers_.top().at - Clock::now());
                wait_ms = static_cast<int>(std::clamp<long long>(left.count(), 0, 1 << 30));
            }
            const int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), wait_ms);
            if (n < 0) {
                if (errno == EINTR) continue;
                throw_last_errno("running commands: waiting");
            }
            for (int i = 0; i < n; ++i) on_event(events[i].data.u64);
        }
        return std::move(results_);
    }

private:
    void schedule(std::size_t j, Clock::time_point at) {
        states_[j].due = at;
        timers_.push({at, j});
    }

    void fire_timers() {
        const auto now = Clock::now();
        while (!timers_.empty() && timers_.top().at <= now) {
            const Timer t = timers_.top();
            timers_.pop();
            JobState& st = states_[t.job];
            if (st.done || st.due != t.at) continue;  // superseded
            if (st.child) {
                // The attempt ran out of time: its process group is killed; the pidfd
                // reports the exit.
                ::kill(-st.child->pid, SIGKILL);
                results_[t.job].result.timed_out = true;
            } else {
                waiting_.push_back(t.job);  // a retry is due
            }
        }
    }

    void watch(int fd, std::uint64_t tag) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = tag;
        if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) < 0)
            throw_last_errno("running commands: adding to epoll");
    }

    void start_waiting() {
        while (!waiting_.empty() && running_ < parallel_) {
            const std::size_t j = waiting_.front();
            waiting_.pop_front();
            start(j);
        }
    }

    void start(std::size_t j) {
        const BatchJob& job = jobs_[j];
        JobState& st = states_[j];
        BatchResult& r = results_[j];
        ++r.attempts;
        r.result = RunResult{};
        r.start_error.clear();
        const std::string what = detail::describe(job.command);
        UniqueFd null = detail::open_dev_null(O_RDONLY, what);
        UniqueFd out_read, out_write, err_read, err_write;
        detail::make_pipe(out_read, out_write, what);
        detail::make_pipe(err_read, err_write, what);
        detail::Spawned child;
        try {
            child = detail::spawn(job.command, detail::Mode::captured, {null.get(), out_write.get(), err_write.get()});
        } catch (const KernelError& e) {
            // As shells say it: 127 not found, 126 found but not executable.
            r.start_error = e.what();
            r.result.returncode = e.errno_value() == ENOENT ? 127 : 126;
            attempt_over(j);
            return;
        }
        Running run;
        run.pid = child.pid;
        run.pidfd.reset(detail::pidfd_open(child.pid));
        if (!run.pidfd) {
            ::kill(-child.pid, SIGKILL);
            detail::wait_status(child.pid);
            throw_last_errno(what + ": opening a pidfd");
        }
        run.out = std::move(out_read);
        run.err = std::move(err_read);
        detail::set_nonblocking(run.out.get(), what);
        detail::set_nonblocking(run.err.get(), what);
        st.child = std::move(run);
        st.started = true;
        ++running_;
        watch(st.child->pidfd.get(), j * 3);
        watch(st.child->out.get(), j * 3 + 1);
        watch(st.child->err.get(), j * 3 + 2);
        schedule(j, Clock::now() + job.timeout);
    }

    void on_event(std::uint64_t tag) {
        const std::size_t j = tag / 3;
        JobState& st = states_[j];
        if (!st.child) return;
        RunResult& r = results_[j].result;
        switch (tag % 3) {
            case 1: drain(st.child->out, r.out); return;
            case 2: drain(st.child->err, r.err); return;
            default: break;
        }
        // Exited: whatever it wrote is in the pipes now (what it left running in the
        // background may keep them open; we do not wait for that).
        const int status = detail::wait_status(st.child->pid);
        drain(st.child->out, r.out);
        drain(st.child->err, r.err);
        st.child.reset();  // closing the fds also removes them from epoll
        --running_;
        if (status < 0) throw_last_errno(detail::describe(jobs_[j].command) + ": collecting the exit status");
        r.returncode = decode(status);
        attempt_over(j);
    }

    void attempt_over(std::size_t j) {
        const BatchJob& job = jobs_[j];
        JobState& st = states_[j];
        const BatchResult& r = results_[j];
        const bool holds = r.start_error.empty() && !r.result.timed_out &&
            (job.holds ? job.holds(r.result) : r.result.returncode == 0);
        const auto now = Clock::now();
        const auto deadline = st.first_start + job.retry_for;
        if (!holds && now < deadline) {
            schedule(j, std::min<Clock::time_point>(now + st.backoff, deadline));
            st.backoff = std::min<Clock::duration>(st.backoff * 2, kMaxBackoff);
            return;
        }
        st.done = true;
        --remaining_;
    }

    const std::vector<BatchJob>& jobs_;
    const std::size_t parallel_;
    std::vector<BatchResult> results_;
    std::vector<JobState> states_;
    std::deque<std::size_t> waiting_;
    std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_;
    UniqueFd epoll_;
    std::size_t running_ = 0;
    std::size_t remaining_ = 0;
};

}  // namespace

std::vector<BatchResult> run_batch(const std::vector<BatchJob>& jobs, std::size_t parallel) {
    return Batch(jobs, parallel).run();
}

}  // namespace labctl::proc
