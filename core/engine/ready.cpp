#include "engine/ready.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "base/error.hpp"
#include "ping/ping.hpp"

namespace labctl::engine::detail {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using namespace topology;

constexpr milliseconds kConnectTimeout{250};
constexpr milliseconds kFirstWait{50};
constexpr milliseconds kMaxWait{500};
constexpr milliseconds kMaxReadyRun{5000};
constexpr std::size_t kOutputLines = 10;

// Of what follows `offset` in the file (a restarted daemon appends to its log).
std::string last_lines(const std::string& path, std::uint64_t offset, std::size_t max_lines) {
    std::ifstream f(path);
    f.seekg(static_cast<std::streamoff>(offset));
    std::vector<std::string> lines;
    for (std::string line; std::getline(f, line);) {
        lines.push_back(std::move(line));
        if (lines.size() > max_lines) lines.erase(lines.begin());
    }
    std::string out;
    for (const auto& l : lines) out += (out.empty() ? "" : "\n") + l;
    return out;
}

bool has_exited(const UniqueFd& pidfd) {
    if (!pidfd) return true;
    pollfd p{pidfd.get(), POLLIN, 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

// The node's own addresses a daemon may listen on: every address of every interface
// (IPv6 link-local ones need a scope and are left out) and both loopback addresses.
std::vector<IpAddress> own_addresses(const Node& node) {
    std::vector<IpAddress> out;
    auto add = [&](const IpAddress& a) {
        if (a.family == AF_INET6 && a.bytes[0] == 0xfe && (a.bytes[1] & 0xc0) == 0x80) return;
        if (std::find_if(out.begin(), out.end(), [&](const IpAddress& b) { return b.to_string() == a.to_string(); }) ==
            out.end())
            out.push_back(a);
    };
    for (const auto& iface : node.interfaces)
        for (const auto& p : iface.addresses) add(p.address);
    add(*IpAddress::parse("127.0.0.1"));
    add(*IpAddress::parse("::1"));
    return out;
}

struct Watch {
    const StartedDaemon* started = nullptr;
    const Node* node = nullptr;
    const Daemon* spec = nullptr;
    UniqueFd pidfd;
    bool ready = false;
    Clock::time_point deadline;
    std::string last_test;  // what the last readiness test said
};

[[noreturn]] void fail(const Watch& w, const std::string& what) {
    const std::string output = last_lines(w.started->log, w.started->log_offset, kOutputLines);
    throw LabError(w.node->name + ": daemon \"" + w.spec->display() + "\" " + what +
                   (output.empty() ? "; it printed nothing" : "; its output ends:\n" + output));
}

std::string seconds(double s) {
    std::ostringstream o;
    o << s;
    return o.str();
}

}  // namespace

std::string describe_daemon_end(const std::string& log) {
    // The supervisor writes the status right after the daemon is reaped.
    const auto give_up = Clock::now() + std::chrono::seconds(1);
    std::optional<int> status;
    while (!(status = proc::daemon_exit_status(log)) && Clock::now() < give_up)
        std::this_thread::sleep_for(milliseconds(5));
    if (!status) return "exited";
    if (*status < 0) return "was killed by signal " + std::to_string(-*status);
    return "exited with status " + std::to_string(*status);
}

void wait_until_ready(const Topology& topo, const std::vector<int>& netns_fds,
                      const std::vector<StartedDaemon>& started) {
    const auto start = Clock::now();
    std::vector<Watch> watches;
    for (const auto& d : started) {
        Watch w;
        w.started = &d;
        w.node = &topo.nodes[d.node];
        w.spec = &w.node->daemons[d.index];
        w.pidfd = proc::open_pidfd(d.id);
        w.ready = !w.spec->has_readiness();
        w.deadline = start + milliseconds(static_cast<long long>(w.spec->ready_timeout_s * 1000));
        watches.push_back(std::move(w));
    }
    auto check_exits = [&] {
        for (const auto& w : watches)
            if (has_exited(w.pidfd))
                fail(w, describe_daemon_end(w.started->log) + " while labctl waited for the daemons to be ready");
    };

    milliseconds wait = kFirstWait;
    for (;;) {
        check_exits();
        std::vector<ping::Probe> probes;
        std::vector<std::size_t> probe_owner;
        std::vector<proc::BatchJob> jobs;
        std::vector<std::size_t> job_owner;
        const auto now = Clock::now();
        for (std::size_t i = 0; i < watches.size(); ++i) {
            const Watch& w = watches[i];
            if (w.ready) continue;
            const int fd = netns_fds[w.started->node];
            if (w.spec->ready_port) {
                for (const auto& address : own_addresses(*w.node)) {
                    ping::Probe p;
                    p.protocol = ping::Protocol::tcp;
                    p.port = *w.spec->ready_port;
                    p.netns_fd = fd;
                    p.netns_name = w.node->netns;
                    p.destination = address;
                    p.timeout = kConnectTimeout;
                    probes.push_back(p);
                    probe_owner.push_back(i);
                }
            } else {
                proc::BatchJob job;
                job.command = proc::Command{w.node->netns, w.spec->ready_run, {}, fd, w.node->name};
                job.timeout =
                    std::clamp(std::chrono::ceil<milliseconds>(w.deadline - now), milliseconds(100), kMaxReadyRun);
                jobs.push_back(std::move(job));
                job_owner.push_back(i);
            }
        }
        if (probes.empty() && jobs.empty()) break;

        for (std::size_t i : probe_owner)
            watches[i].last_test =
                "no connection to port " + std::to_string(*watches[i].spec->ready_port) + " on its addresses";
        const auto answers = ping::run(probes);
        for (std::size_t k = 0; k < answers.size(); ++k)
            if (answers[k].received > 0) watches[probe_owner[k]].ready = true;
        if (!jobs.empty()) {
            const auto results = proc::run_batch(jobs);
            for (std::size_t k = 0; k < results.size(); ++k) {
                Watch& w = watches[job_owner[k]];
                const auto& r = results[k];
                if (r.start_error.empty() && !r.result.timed_out && r.result.returncode == 0) {
                    w.ready = true;
                    continue;
                }
                const std::string cmd = "`" + Command{w.spec->ready_run, false}.display() + "`";
                w.last_test = !r.start_error.empty() ? r.start_error
                    : r.result.timed_out             ? cmd + " ran too long"
                                                     : cmd + " exited with " + std::to_string(r.result.returncode);
            }
        }
        check_exits();
        if (std::all_of(watches.begin(), watches.end(), [](const Watch& w) { return w.ready; })) break;

        auto next = Clock::now() + wait;
        for (const auto& w : watches) {
            if (w.ready) continue;
            if (Clock::now() >= w.deadline)
                fail(w, "was not ready after " + seconds(w.spec->ready_timeout_s) + " s (" + w.last_test + ")");
            next = std::min(next, w.deadline);
        }
        // Sleep in poll() on the daemons' pidfds: an exit ends the wait at once.
        std::vector<pollfd> fds;
        for (const auto& w : watches)
            if (w.pidfd) fds.push_back({w.pidfd.get(), POLLIN, 0});
        const auto left = std::chrono::ceil<milliseconds>(next - Clock::now()).count();
        if (left > 0 && ::poll(fds.data(), fds.size(), static_cast<int>(left)) < 0 && errno != EINTR)
            throw_last_errno("waiting for the daemons");
        wait = std::min(wait * 2, kMaxWait);
    }
}

}  // namespace labctl::engine::detail
