// Process identity, stopping, and finding what runs inside a namespace.

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "proc/pidfd.hpp"
#include "proc/proc.hpp"
#include "proc/spawn.hpp"

namespace labctl::proc {

namespace {

using Clock = std::chrono::steady_clock;
// How long a SIGKILLed process may take to go; longer means it is stuck in the kernel.
constexpr std::chrono::milliseconds kill_timeout{10000};

std::string process_name(pid_t pid) { return "process " + std::to_string(pid); }

// False when the process has already exited.
bool send(int pidfd, pid_t pid, int sig) {
    if (detail::pidfd_send_signal(pidfd, sig) == 0) return true;
    if (errno == ESRCH) return false;
    throw_last_errno(process_name(pid) + ": sending SIG" + ::sigabbrev_np(sig));
}

// Waits until every pidfd in `fds` has polled readable (its process exited) or the
// time is up; those still running are left in `fds`.
void wait_exited(std::vector<std::pair<UniqueFd, pid_t>>& fds, std::chrono::milliseconds limit) {
    const auto deadline = Clock::now() + limit;
    while (!fds.empty()) {
        std::vector<pollfd> polled;
        for (const auto& [fd, pid] : fds) polled.push_back({fd.get(), POLLIN, 0});
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
        const int ready = ::poll(polled.data(), polled.size(), static_cast<int>(std::max<long long>(0, left.count())));
        if (ready < 0 && errno != EINTR) throw_last_errno("waiting for processes to exit");
        for (std::size_t i = polled.size(); i-- > 0;) {
            if (polled[i].revents & POLLIN) fds.erase(fds.begin() + static_cast<long>(i));
        }
        if (ready == 0 || Clock::now() >= deadline) return;
    }
}

// TERM, grace, KILL; throws LabError when some survive that too.
void terminate(std::vector<std::pair<UniqueFd, pid_t>> fds, std::chrono::milliseconds grace) {
    for (auto it = fds.begin(); it != fds.end();) {
        it = send(it->first.get(), it->second, SIGTERM) ? it + 1 : fds.erase(it);
    }
    wait_exited(fds, grace);
    for (auto it = fds.begin(); it != fds.end();) {
        it = send(it->first.get(), it->second, SIGKILL) ? it + 1 : fds.erase(it);
    }
    wait_exited(fds, kill_timeout);
    if (!fds.empty()) throw LabError(process_name(fds.front().second) + ": still running 10 s after SIGKILL");
}

bool in_any_netns(pid_t pid, const std::vector<NetnsId>& namespaces) {
    const std::string path = "/proc/" + std::to_string(pid) + "/ns/net";
    struct stat st {};
    // Gone, a zombie (its namespaces are released) or a kernel thread we may not see.
    if (::stat(path.c_str(), &st) < 0) return false;
    return std::binary_search(namespaces.begin(), namespaces.end(), NetnsId{st.st_dev, st.st_ino});
}

}  // namespace

std::optional<unsigned long long> start_time_of(pid_t pid) {
    if (pid <= 0) return std::nullopt;
    const std::string path = "/proc/" + std::to_string(pid) + "/stat";
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOENT || errno == ESRCH) return std::nullopt;
        throw_last_errno("reading " + path);
    }
    char text[4096];
    ssize_t n;
    do {
        n = ::read(fd.get(), text, sizeof text);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == ESRCH) return std::nullopt;
        throw_last_errno("reading " + path);
    }
    char state = 0;
    unsigned long long start = 0;
    if (!detail::parse_stat(text, static_cast<std::size_t>(n), &state, &start))
        throw LabError("reading " + path + ": unexpected format");
    if (state == 'Z' || state == 'X') return std::nullopt;  // exited, not yet reaped
    return start;
}

bool is_same_process(const ProcessId& id) {
    const auto start = start_time_of(id.pid);
    return start && *start == id.start_time;
}

void stop(const ProcessId& id, std::chrono::milliseconds grace) {
    UniqueFd pidfd(detail::pidfd_open(id.pid));
    if (!pidfd) {
        if (errno == ESRCH) return;
        throw_last_errno(process_name(id.pid) + ": opening a pidfd");
    }
    // Checked after opening the pidfd: if this is still the process, the pidfd names it
    // for good, even if it exits and the pid is reused from here on.
    if (!is_same_process(id)) return;
    std::vector<std::pair<UniqueFd, pid_t>> fds;
    fds.emplace_back(std::move(pidfd), id.pid);
    terminate(std::move(fds), grace);
}

std::vector<pid_t> pids_in_netns(dev_t dev, ino_t ino) { return pids_in_any_netns({{dev, ino}}); }

std::vector<pid_t> pids_in_any_netns(std::vector<NetnsId> namespaces) {
    std::sort(namespaces.begin(), namespaces.end());
    if (namespaces.empty()) return {};
    DIR* dir = ::opendir("/proc");
    if (dir == nullptr) throw_last_errno("listing /proc");
    std::vector<pid_t> pids;
    const pid_t self = ::getpid();
    while (const dirent* entry = ::readdir(dir)) {
        char* end = nullptr;
        const long pid = std::strtol(entry->d_name, &end, 10);
        if (end == entry->d_name || *end != '\0' || pid <= 0 || pid == self) continue;
        if (in_any_netns(static_cast<pid_t>(pid), namespaces)) pids.push_back(static_cast<pid_t>(pid));
    }
    ::closedir(dir);
    return pids;
}

void kill_all_in_netns(dev_t dev, ino_t ino, std::chrono::milliseconds grace) { stop_all({}, {{dev, ino}}, grace); }

void kill_all_in_any_netns(std::vector<NetnsId> namespaces, std::chrono::milliseconds grace) {
    stop_all({}, std::move(namespaces), grace);
}

void stop_all(const std::vector<ProcessId>& daemons, std::vector<NetnsId> namespaces, std::chrono::milliseconds grace,
              std::chrono::milliseconds limit) {
    std::sort(namespaces.begin(), namespaces.end());
    // A pidfd for each process to stop; each looked at again after its pidfd was opened,
    // so that the pidfd names the process that was meant.
    auto gather = [&] {
        std::vector<std::pair<UniqueFd, pid_t>> fds;
        auto known = [&](pid_t pid) {
            return std::any_of(fds.begin(), fds.end(), [&](const auto& f) { return f.second == pid; });
        };
        for (const auto& d : daemons) {
            if (known(d.pid)) continue;
            UniqueFd pidfd(detail::pidfd_open(d.pid));
            if (!pidfd || !is_same_process(d)) continue;
            fds.emplace_back(std::move(pidfd), d.pid);
        }
        for (const pid_t pid : pids_in_any_netns(namespaces)) {
            if (known(pid)) continue;
            UniqueFd pidfd(detail::pidfd_open(pid));
            if (!pidfd || !in_any_netns(pid, namespaces)) continue;
            fds.emplace_back(std::move(pidfd), pid);
        }
        return fds;
    };
    auto signal_all = [&](std::vector<std::pair<UniqueFd, pid_t>>& fds, int sig) {
        for (auto it = fds.begin(); it != fds.end();)
            it = send(it->first.get(), it->second, sig) ? it + 1 : fds.erase(it);
    };
    const auto deadline = Clock::now() + limit;
    auto fds = gather();
    if (fds.empty()) return;
    signal_all(fds, SIGTERM);
    wait_exited(fds, grace);
    for (;;) {
        fds = gather();
        if (fds.empty()) return;
        if (Clock::now() >= deadline) {
            std::string pids;
            for (const auto& f : fds) pids += (pids.empty() ? "" : ", ") + std::to_string(f.second);
            throw LabError("processes " + pids +
                           " are still running after SIGKILL (new ones keep appearing, "
                           "or they are stuck in the kernel)");
        }
        signal_all(fds, SIGKILL);
        wait_exited(fds,
                    std::min<std::chrono::milliseconds>(
                        kill_timeout, std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now())));
    }
}

}  // namespace labctl::proc
