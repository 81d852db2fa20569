#pragma once
// Internal to proc/: what runs in the child between fork and execve (child.cpp), and the
// Boost.Process v1 handler that runs it (the design is at the top of spawn.cpp).
// Everything here that runs in the child makes async-signal-safe system calls only, on
// data the parent prepared.

#include <dirent.h>
#include <sys/types.h>

#include <memory>
#include <boost/process/extend.hpp>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "proc/proc.hpp"
#include "proc/spawn.hpp"

namespace labctl::proc::detail {

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

// What failed at `stage`, for the parent's message; null for Stage::exec and daemon_started.
const char* stage_text(Stage stage);

// Everything the child needs, prepared by the parent (the child must not allocate).
struct ChildSetup {
    Mode mode;
    Stdio stdio;
    int netns_fd;
    int report_fd;
    const char* sysfs_source;
    unsigned long sysfs_overlay_flags;
    const std::vector<std::pair<std::string, std::string>>* etc_binds;
    char* const* argv;       // null-terminated; argv[0] as the caller gave it
    char** envp;             // null-terminated
    const Account* account;  // null: stay who we are
    const char* cwd;         // null: stay where we are
    int pidns_fd;            // rootless: daemons run in the keeper's PID namespace; -1: stay
};

// Writes r to the parent's report pipe (one write, below PIPE_BUF).
void report(int fd, const Report& r);

// Runs in the child, between fork and execve. Returns only when the child is ready to
// exec; any failure is reported and ends the child.
void enter(const ChildSetup& s);

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

}  // namespace labctl::proc::detail
