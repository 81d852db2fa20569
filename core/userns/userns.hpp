#pragma once
// Rootless labs: a process without privileges runs every lab command inside a user
// namespace it owns. See docs/rootless.md for the design.
//
// One "keeper" process per state directory owns a user namespace (the caller's uid and
// gid mapped to 0), and, created inside it, a mount, a network and a PID namespace (the
// keeper is its init). It
// mounts a tmpfs on <state>/.netns in its mount namespace: labs' named namespaces are
// bind-mounted there (nothing in /run/netns, invisible to `ip netns`). Every rootless
// labctl process (and the Python module) joins all three namespaces with one setns() on
// the keeper's pidfd, before it starts any thread; from then on the engine runs as
// root of the user namespace and needs no code of its own for rootless mode: its "root
// namespace" is the keeper's empty network namespace, its /run/netns is the tmpfs.
//
// Kernel facts relied on:
// - setns() into a user or mount namespace needs a single-threaded caller (CLONE_FS is
//   shared by threads); it resets the root and the working directory (restored by path).
// - setns() leaves uids alone: the caller's uid is the one mapped to 0, so geteuid() is 0
//   inside and the files it owns show uid 0; everyone else's show the overflow uid.
// - The mount namespace dies with its last member, and with it the bind mounts that held
//   the labs' network namespaces: a dead keeper takes its labs' namespaces along (and,
//   being the init of their PID namespace, their daemons).
// - labctl does not join the PID namespace: after setns(CLONE_NEWPID) a process can no
//   longer make threads (clone(CLONE_THREAD) fails with EINVAL while its children's PID
//   namespace differs from its own), and the engine needs threads. Only the daemons'
//   supervisors join it (proc/spawn.cpp), right before forking the daemon: when the
//   keeper dies the kernel kills every daemon of its labs.
// - /dev/net/tun (mode 0600 root on some hosts) is checked against the uid outside: root
//   of a user namespace gets no access to files of unmapped owners.
//
// Nothing here prints or exits.

#include <sys/types.h>

#include <optional>
#include <string>

namespace labctl::userns {

// The state directory of a user without privileges: $XDG_RUNTIME_DIR/labctl when set
// (and absolute), else /tmp/labctl-<uid>. $LABCTL_STATE_DIR overrides both (as for root).
std::string default_state_root(uid_t uid);

// Called once, early, while the process has one thread. Root (euid 0) stays as it is,
// unless $LABCTL_STATE_DIR is a user's state directory whose keeper runs: then root joins
// that keeper as the user (to see, enter or remove that user's labs).
// Anyone else gets the state directory checked (created mode 0700; refused when it is a
// symlink, someone else's or open to others), the keeper of that state directory found
// or started, and joins it. Never throws: a failure is kept for join_error().
void enter_if_unprivileged() noexcept;

// Whether this process joined a keeper (runs rootless).
bool active() noexcept;

// Why entering failed ("" when it did not, or was not tried): a sentence naming the
// cause, e.g. the sysctl that disables unprivileged user namespaces.
const std::string& join_error() noexcept;

// The keeper this process joined (0 when none) and its start time (clock ticks since
// boot, /proc/<pid>/stat field 22): together they name it, as a pid alone is reused.
pid_t keeper_pid() noexcept;
unsigned long long keeper_start_time() noexcept;

// Rootless: the keeper's PID namespace (it is its init), where daemons are started so that
// they die with it; -1 otherwise. This process itself never joins it (see above).
int pidns_fd() noexcept;

// Whether the keeper pid/start time is still alive. Throws nothing.
bool keeper_alive(pid_t pid, unsigned long long start_time) noexcept;

// For a lab whose state directory is `lab_dir`: when the keeper that held it is not the
// one this process joined (it ended), a sentence saying so; nullopt otherwise (root
// labs have no keeper). Throws nothing.
std::optional<std::string> keeper_lost(const std::string& lab_dir);

// What keeps unprivileged user namespaces from working on this host, read under
// `proc_root` ("": /proc, or $LABCTL_TEST_SETTINGS_DIR for tests, which then also makes
// creating a user namespace fail as such a host would): the setting and what to do, e.g.
// "user.max_user_namespaces=0 (set it above 0: sysctl -w user.max_user_namespaces=15000)",
// nullopt when no known setting forbids them. Throws nothing.
std::optional<std::string> disabling_setting(const std::string& proc_root = "");

// "" when /dev/net/tun can be opened read-write by this process or fails for another
// reason than permission (no TUN in the kernel: the feature probe says so); else why not,
// in words the user can act on. Throws nothing.
std::string tun_denied() noexcept;

}  // namespace labctl::userns
