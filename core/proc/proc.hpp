#pragma once
// Running commands inside a node's network namespace, the way `ip netns exec` does:
// the child enters the namespace, gets a private mount namespace (/ made a recursive
// slave so nothing leaks back to the host), a fresh /sys that shows the namespace's
// interfaces, and the files of /etc/netns/<netns>/ bound over /etc/<file>.
//
// Never a shell unless the caller asks for one ({"/bin/sh", "-c", text}). The child
// inherits no descriptor of ours except 0, 1 and 2, and starts with every signal
// unblocked and at its default disposition.
//
// Processes are launched with Boost.Process (v1, Boost 1.74 from Debian's libboost-dev);
// see spawn.cpp for why that version and which extension point.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/unique_fd.hpp"

namespace labctl::proc {

// A user to run a command as: resolved in the parent (the child must not read files).
struct Account {
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;  // supplementary groups
    std::string home;           // "/" when the user database has none
};

// `user` as a name of this host's user database, or a uid in decimal (a uid without an
// entry gets its own number as gid, no supplementary groups and HOME=/). Throws LabError
// for an unknown name.
Account resolve_user(const std::string& user);

struct Command {
    // Name under /run/netns; also names the sysfs instance and selects /etc/netns/<netns>/.
    std::string netns;
    // argv[0] without a '/' is looked up in PATH (the child's environment's PATH, else
    // a standard one) before the child starts, like execvp but never falling back to a
    // shell; the program receives argv unchanged.
    std::vector<std::string> argv;
    // Added to (or replacing entries of) our environment for the child; ignored when
    // `environment` is given.
    std::map<std::string, std::string> extra_env;
    // When >= 0, the namespace to enter instead of opening /run/netns/<netns>; borrowed,
    // never closed here.
    int netns_fd = -1;
    // How errors name the command's owner ("h1"); `netns` when empty.
    std::string label;
    // The child's whole environment ("KEY=value" each) instead of ours; nothing of
    // ours leaks into it.
    std::optional<std::vector<std::string>> environment;
    // The child's working directory (entered after `account` took effect); ours when empty.
    std::string cwd;
    // Runs the program as this account: supplementary groups, gid and uid are set
    // after the namespace and mounts are set up, which drops every capability.
    std::optional<Account> account;
};

struct RunResult {
    int returncode = 0;  // exit code, or -signal when killed (like Python's subprocess)
    std::string out, err;
    bool timed_out = false;
    std::size_t dropped = 0;  // bytes dropped from the front of out and err (max_output)
};

// Runs the command with stdin fed from `input` (nullopt: /dev/null), stdout and stderr
// captured. On timeout the child's process group (the child leads its own) gets SIGKILL
// and the result says timed_out. Returns once the child has exited; output still
// written afterwards by programs it left running in the background is not waited for.
// Throws KernelError/LabError when the command cannot be started ("h1: running \"foo\":
// No such file or directory (ENOENT)") or a system call of ours fails.
// A command that has exited is never reported as timed out, however late we look (we
// may have been stopped, SIGSTOP, meanwhile). With `cancel`: once *cancel is true (a
// signal handler sets it), the child's process group gets SIGKILL and LabError
// ("interrupted"), EINTR is thrown, within about 100 ms. With `max_output` > 0, only the
// last max_output bytes of stdout and of stderr are kept (`dropped` counts the rest).
RunResult run(const Command& command, const std::optional<std::string>& input,
              std::optional<std::chrono::milliseconds> timeout, const std::atomic<bool>* cancel = nullptr,
              std::size_t max_output = 0);

// One command of a batch (checks): run with stdin /dev/null and output captured, killed
// after `timeout`; while `holds` says no and less than `retry_for` has passed since the
// first attempt, run again after a backoff (100 ms, doubling up to 1 s).
struct BatchJob {
    Command command;
    std::chrono::milliseconds timeout{10000};
    std::chrono::milliseconds retry_for{0};
    std::function<bool(const RunResult&)> holds;  // empty: exit code 0
};

struct BatchResult {
    RunResult result;  // of the last attempt
    int attempts = 0;
    std::string start_error;  // the command could not be started ("h1: running \"foo\": ...")
};

// Runs every job, up to `parallel` at once, from one event loop (epoll over pidfds and
// pipes) on the calling thread: no CPU is spent waiting, between attempts included. A
// command that cannot be started is a result (start_error, returncode 127 or 126 as in
// shells), not an exception. Throws KernelError when a system call of ours fails.
std::vector<BatchResult> run_batch(const std::vector<BatchJob>& jobs, std::size_t parallel = 32);

// Runs the command with our stdin, stdout and stderr, in our process group (so the
// terminal's job control and ^C reach it). SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to
// us (not those the terminal already sent to the whole group) are forwarded while it
// runs. Returns its exit code, or 128+signal when a signal killed it, like a shell.
// The signals are blocked and read in the calling thread, so this is meant for a
// single-threaded caller (the CLI). Throws like run().
int run_interactive(const Command& command);

// A process identity that survives pid reuse.
struct ProcessId {
    pid_t pid = 0;
    unsigned long long start_time = 0;  // field 22 of /proc/<pid>/stat (clock ticks since boot)
    bool operator==(const ProcessId&) const = default;
};

// Starts a daemon: its own session, stdin /dev/null, stdout and stderr appended to
// log_path (created mode 0600 when absent, by us: the command's account need not write
// there), in the command's cwd (ours when empty). It is not our
// child (double fork), so it outlives us and we never reap it. Returns once the daemon
// has exec'd. Throws like run(), and KernelError when log_path cannot be opened.
// The daemon's parent is a small supervisor (a fork of ours, in its own session, holding
// nothing of ours open) that writes how the daemon ended to exit_status_path(log_path).
ProcessId start_daemon(const Command& command, const std::string& log_path);

// Starts the command in the background as our child, in its own process group, stdin
// /dev/null, stdout and stderr appended to log_path (created mode 0600 when absent).
// The caller reaps it (waitpid). Returns once it has exec'd. Throws like start_daemon().
ProcessId start_child(const Command& command, const std::string& log_path);
// A pidfd of the process if it is still `id` (polls readable once it exits); an empty
// one when it is gone. Throws KernelError for other failures.
UniqueFd open_pidfd(const ProcessId& id);

// Where the supervisor of the daemon logging to `log_path` records how it ended.
std::string exit_status_path(const std::string& log_path);
// How that daemon ended: its exit code, or -signal; nullopt while it runs (or when it
// was started by a labctl that kept no record).
std::optional<int> daemon_exit_status(const std::string& log_path);

// The start time of a live process; nullopt when there is none with that pid or it has
// exited and only its zombie is left. Throws KernelError when /proc cannot be read for
// another reason.
std::optional<unsigned long long> start_time_of(pid_t pid);

// True when `id.pid` is alive and started at `id.start_time` (a reused pid is not ours).
// Throws like start_time_of().
bool is_same_process(const ProcessId& id);

// If `id` is still the same process: SIGTERM, up to `grace` for it to exit, then SIGKILL.
// Returns once it is gone (or was never ours). Throws KernelError when a signal cannot
// be sent for a reason other than the process being gone, LabError when it survives
// SIGKILL for 10 s (stuck in the kernel).
void stop(const ProcessId& id, std::chrono::milliseconds grace);

// Every process (other than us) whose /proc/<pid>/ns/net is the namespace with this
// device and inode (fstat of /run/netns/<name>). Only the main thread's namespace is
// looked at. Throws KernelError when /proc cannot be listed.
std::vector<pid_t> pids_in_netns(dev_t dev, ino_t ino);

// A namespace's identity: st_dev and st_ino of its nsfs file.
using NetnsId = std::pair<dev_t, ino_t>;
// The same for several namespaces with one pass over /proc (a lab of 1,000 nodes).
std::vector<pid_t> pids_in_any_netns(std::vector<NetnsId> namespaces);

// Stops the `daemons` still alive as themselves and every process in any of `namespaces`,
// all at once: SIGTERM to each, one `grace` for all of them, then SIGKILL to whatever is
// left or has appeared since (children forked meanwhile, a process that forks when told
// to stop), again and again without grace until none is left. The caller must hold the
// namespaces (an fd each) so that their dev/ino name no other. Throws KernelError when
// /proc cannot be read or a signal not sent, LabError naming the processes still there
// after `limit`.
void stop_all(const std::vector<ProcessId>& daemons, std::vector<NetnsId> namespaces, std::chrono::milliseconds grace,
              std::chrono::milliseconds limit = std::chrono::seconds(30));

// stop_all() of the processes in the namespace(s) alone.
void kill_all_in_netns(dev_t dev, ino_t ino, std::chrono::milliseconds grace);
void kill_all_in_any_netns(std::vector<NetnsId> namespaces, std::chrono::milliseconds grace);

}  // namespace labctl::proc
