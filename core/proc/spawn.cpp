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
#include "proc/child.hpp"

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

std::string find_program(const std::string& name, const std::vector<std::string>& env, const std::string& what) {
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
    while (::waitpid(pid, status ? status : &ignored, 0) < 0 && errno == EINTR) {}
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
        throw LabError((command.label.empty() ? command.netns : command.label) + ": running a command: empty argv");
    }
    for (const int fd : {stdio.in, stdio.out, stdio.err}) {
        if (fd >= 0 && fd <= 2)
            throw LabError(what + ": stdio descriptor " + std::to_string(fd) + " would be clobbered (internal error)");
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
    const unsigned long overlay_flags = (::statvfs("/sys", &sys) == 0 && (sys.f_flag & ST_RDONLY)) ? MS_RDONLY : 0;
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
