#include "userns/userns.hpp"

#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "netns/netns.hpp"
#include "state/state.hpp"
#include "userns/keeper.hpp"

namespace labctl::userns {

using namespace detail;

namespace {

struct Joined {
    bool active = false;
    std::string error;
    pid_t keeper = 0;
    unsigned long long start_time = 0;
    uid_t outside_uid = 0;
    UniqueFd lock;   // LOCK_SH on .keeper.lock for the process's life: the keeper stays
    UniqueFd pidns;  // the keeper's PID namespace
};

Joined& joined() {
    static Joined j;
    return j;
}

constexpr const char* kNetnsDir = ".netns";
constexpr const char* kSpawnLock = ".keeper.spawn";

std::optional<std::string> read_small(const std::string& path) {
    std::ifstream in(path);
    if (!in) return std::nullopt;
    std::stringstream s;
    s << in.rdbuf();
    std::string text = s.str();
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    return text;
}

// Field 22 of /proc/<pid>/stat (after the command name, which may hold spaces and ')'); 0
// for a process that is gone or a zombie.
unsigned long long start_time_of(pid_t pid) {
    auto text = read_small("/proc/" + std::to_string(pid) + "/stat");
    if (!text) return 0;
    auto close = text->rfind(')');
    if (close == std::string::npos) return 0;
    std::istringstream rest(text->substr(close + 2));
    std::string field;
    // A zombie (a killed keeper nobody has reaped yet) is not running.
    if (!(rest >> field) || field == "Z" || field == "X") return 0;
    for (int i = 4; i <= 22 && rest >> field; ++i)
        if (i == 22) return std::strtoull(field.c_str(), nullptr, 10);
    return 0;
}

int thread_count() {
    std::ifstream in("/proc/self/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("Threads:", 0) == 0) return std::atoi(line.c_str() + 8);
    return 1;
}

// Where the settings that disable user namespaces are read: /proc, or for tests (which
// may not change the host's sysctls) $LABCTL_TEST_SETTINGS_DIR, standing for /proc. When
// the test directory disables user namespaces, making one fails as the kernel would
// (EPERM) before it is tried: the code path is that of a host with the setting.
std::string settings_root() {
    const char* dir = ::getenv("LABCTL_TEST_SETTINGS_DIR");
    return dir && *dir ? dir : "/proc";
}

bool simulated_disabled() { return ::getenv("LABCTL_TEST_SETTINGS_DIR") && disabling_setting().has_value(); }

UniqueFd open_state_root(const std::string& root, uid_t uid) {
    if (::mkdir(root.c_str(), 0700) != 0 && errno != EEXIST) throw_last_errno("state directory " + root + ": creating");
    UniqueFd fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
        if (errno == ELOOP || errno == ENOTDIR)
            throw LabError("state directory " + root + " is a symlink or not a directory; refusing to use it");
        if (errno == EACCES)
            throw LabError("state directory " + root + " is not yours (permission denied); refusing to use it", EACCES);
        throw_last_errno("state directory " + root + ": opening");
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw_last_errno("state directory " + root + ": stat");
    if (st.st_uid != uid)
        throw LabError("state directory " + root + " belongs to uid " + std::to_string(st.st_uid) + ", not to uid " +
                           std::to_string(uid) + "; refusing to use it",
                       EACCES);
    if (st.st_mode & 077)
        throw LabError(
            "state directory " + root + " is open to others (mode " +
                [&] {
                    char m[8];
                    std::snprintf(m, sizeof m, "%04o", st.st_mode & 07777);
                    return std::string(m);
                }() +
                "); make it mode 0700 or remove it",
            EACCES);
    return fd;
}

UniqueFd open_lock(int rootfd, const char* name, const std::string& root) {
    UniqueFd fd(::openat(rootfd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) throw_last_errno(root + "/" + name + ": opening");
    return fd;
}

void lock(int fd, int how, const std::string& shown) {
    while (::flock(fd, how) != 0)
        if (errno != EINTR) throw_last_errno(shown + ": locking");
}

void join(uid_t uid, gid_t gid) {
    Joined& j = joined();
    const char* env = ::getenv("LABCTL_STATE_DIR");
    std::string root = env && *env ? env : default_state_root(uid);
    while (root.size() > 1 && root.back() == '/') root.pop_back();
    if (root.empty() || root[0] != '/') throw LabError("LABCTL_STATE_DIR must be an absolute path", EINVAL);
    if (thread_count() != 1)
        throw LabError("rootless mode joins its user namespace before any thread starts; this process has " +
                           std::to_string(thread_count()) + " (import labctl before starting threads)",
                       EBUSY);
    int idle_s = 10;
    if (const char* s = ::getenv("LABCTL_KEEPER_IDLE"); s && *s) idle_s = std::max(1, std::atoi(s));

    UniqueFd rootfd = open_state_root(root, uid);
    if (::mkdirat(rootfd.get(), kNetnsDir, 0700) != 0 && errno != EEXIST)
        throw_last_errno("state directory " + root + "/" + kNetnsDir + ": creating");
    const std::string netns_dir = root + "/" + kNetnsDir;

    UniqueFd spawn = open_lock(rootfd.get(), kSpawnLock, root);
    lock(spawn.get(), LOCK_EX, root + "/" + kSpawnLock);
    UniqueFd held = open_lock(rootfd.get(), kLockFile, root);
    lock(held.get(), LOCK_SH, root + "/" + kLockFile);

    pid_t pid = 0;
    unsigned long long start = 0;
    {
        UniqueFd f(::openat(rootfd.get(), kPidFile, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        if (f) {
            char buf[64] = {};
            if (::read(f.get(), buf, sizeof buf - 1) > 0) std::sscanf(buf, "%d %llu", &pid, &start);
        }
    }
    if (pid <= 0 || !keeper_alive(pid, start)) {
        if (simulated_disabled()) throw LabError(failure_message(kUnshareUser, EPERM), EPERM);
        pid = spawn_keeper(rootfd.get(), netns_dir, uid, gid, idle_s);
        start = start_time_of(pid);
        std::string text = std::to_string(pid) + " " + std::to_string(start) + "\n";
        std::string tmp = std::string(kPidFile) + ".new";
        UniqueFd f(::openat(rootfd.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!f || !write_all(f.get(), text.data(), text.size()) ||
            ::renameat(rootfd.get(), tmp.c_str(), rootfd.get(), kPidFile) != 0)
            throw_last_errno(root + "/" + kPidFile + ": writing");
    }
    UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (!pidfd) throw_last_errno("keeper " + std::to_string(pid) + ": pidfd_open");
    UniqueFd pidns(::open(("/proc/" + std::to_string(pid) + "/ns/pid").c_str(), O_RDONLY | O_CLOEXEC));
    if (!pidns) throw_last_errno("keeper " + std::to_string(pid) + ": opening its PID namespace");
    if (!keeper_alive(pid, start)) throw LabError("keeper " + std::to_string(pid) + " ended while joining it", ESRCH);

    char cwd[4096];
    const bool have_cwd = ::getcwd(cwd, sizeof cwd) != nullptr;
    // Before setns: from here on, paths and uids are those inside.
    state::set_default_root(root);
    state::set_keeper(std::to_string(pid) + " " + std::to_string(start));
    netns::use_dir(netns_dir);
    if (::setns(pidfd.get(), CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET) != 0) {
        int err = errno;
        netns::use_dir("");
        state::set_keeper("");
        throw KernelError(err, "joining the keeper " + std::to_string(pid) + "'s namespaces (setns)");
    }
    // setns() into a mount namespace moved us to its root; the same path is there.
    if (!have_cwd || ::chdir(cwd) != 0) (void)::chdir("/");
    j.keeper = pid;
    j.start_time = start;
    j.lock = std::move(held);
    j.pidns = std::move(pidns);
    j.active = true;
}

// Root given $LABCTL_STATE_DIR of a user whose keeper runs: joins that keeper and becomes
// the user inside it (uid 0 there), so that root sees and removes that user's labs as the
// user does. Anything else (root's own state directory, no keeper): root mode, unchanged.
void join_as_root() {
    const char* env = ::getenv("LABCTL_STATE_DIR");
    if (!env || env[0] != '/') return;
    std::string root = env;
    while (root.size() > 1 && root.back() == '/') root.pop_back();
    UniqueFd rootfd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    struct stat st {};
    if (!rootfd || ::fstat(rootfd.get(), &st) != 0 || st.st_uid == 0) return;
    pid_t pid = 0;
    unsigned long long start = 0;
    {
        UniqueFd f(::openat(rootfd.get(), kPidFile, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        char buf[64] = {};
        if (!f || ::read(f.get(), buf, sizeof buf - 1) <= 0 || std::sscanf(buf, "%d %llu", &pid, &start) != 2) return;
    }
    if (!keeper_alive(pid, start)) return;
    struct stat ks {};
    if (::stat(("/proc/" + std::to_string(pid)).c_str(), &ks) != 0 || ks.st_uid != st.st_uid) return;
    if (thread_count() != 1)
        throw LabError("joining the keeper of " + root + " needs a process without threads", EBUSY);
    UniqueFd held = open_lock(rootfd.get(), kLockFile, root);
    lock(held.get(), LOCK_SH, root + "/" + kLockFile);
    UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    UniqueFd pidns(::open(("/proc/" + std::to_string(pid) + "/ns/pid").c_str(), O_RDONLY | O_CLOEXEC));
    if (!pidfd || !pidns || !keeper_alive(pid, start)) return;
    char cwd[4096];
    const bool have_cwd = ::getcwd(cwd, sizeof cwd) != nullptr;
    if (::setns(pidfd.get(), CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET) != 0)
        throw_last_errno("joining the keeper " + std::to_string(pid) + " of " + root + " (setns)");
    // Root's uid is not mapped there; uid 0 inside is the user.
    if (::setresgid(0, 0, 0) != 0 || ::setresuid(0, 0, 0) != 0)
        throw_last_errno("becoming the owner of " + root + " inside its user namespace");
    if (!have_cwd || ::chdir(cwd) != 0) (void)::chdir("/");
    netns::use_dir(root + "/" + kNetnsDir);
    state::set_keeper(std::to_string(pid) + " " + std::to_string(start));
    Joined& j = joined();
    j.outside_uid = st.st_uid;
    j.keeper = pid;
    j.start_time = start;
    j.lock = std::move(held);
    j.pidns = std::move(pidns);
    j.active = true;
}

}  // namespace

std::string default_state_root(uid_t uid) {
    const char* xdg = ::getenv("XDG_RUNTIME_DIR");
    if (xdg && xdg[0] == '/') {
        std::string dir = xdg;
        while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
        return dir + "/labctl";
    }
    return "/tmp/labctl-" + std::to_string(uid);
}

void enter_if_unprivileged() noexcept {
    Joined& j = joined();
    if (j.active) return;
    try {
        if (::geteuid() == 0) {
            join_as_root();
            return;
        }
        j.outside_uid = ::getuid();
        join(::getuid(), ::getgid());
    } catch (const std::exception& e) {
        j.error = e.what();
    }
}

bool active() noexcept { return joined().active; }
int pidns_fd() noexcept { return joined().active ? joined().pidns.get() : -1; }
const std::string& join_error() noexcept { return joined().error; }
pid_t keeper_pid() noexcept { return joined().keeper; }
unsigned long long keeper_start_time() noexcept { return joined().start_time; }

bool keeper_alive(pid_t pid, unsigned long long start_time) noexcept {
    if (pid <= 0) return false;
    unsigned long long now = start_time_of(pid);
    return now != 0 && now == start_time;
}

std::optional<std::string> keeper_lost(const std::string& lab_dir) {
    auto text = read_small(lab_dir + "/keeper");
    if (!text) return std::nullopt;
    pid_t pid = 0;
    unsigned long long start = 0;
    if (std::sscanf(text->c_str(), "%d %llu", &pid, &start) != 2) return std::nullopt;
    if (active() && pid == keeper_pid() && start == keeper_start_time()) return std::nullopt;
    // Another keeper than ours: the lab's namespaces and processes went with it.
    return "the keeper (pid " + std::to_string(pid) +
        ") holding this rootless lab has ended, and with it the lab's "
        "namespaces and processes; `labctl down` removes what is left";
}

std::optional<std::string> disabling_setting(const std::string& proc_root) {
    const std::string root = proc_root.empty() ? settings_root() : proc_root;
    auto value = [&](const char* rel) { return read_small(root + "/sys/" + rel); };
    if (auto v = value("kernel/unprivileged_userns_clone"); v && *v == "0")
        return "kernel.unprivileged_userns_clone=0 (allow them: sysctl -w "
               "kernel.unprivileged_userns_clone=1)";
    if (auto v = value("user/max_user_namespaces"); v && *v == "0")
        return "user.max_user_namespaces=0 (allow them: sysctl -w user.max_user_namespaces=15000)";
    if (auto v = value("kernel/apparmor_restrict_unprivileged_userns"); v && *v == "1")
        return "kernel.apparmor_restrict_unprivileged_userns=1 (allow them: sysctl -w "
               "kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile for labctl that "
               "allows userns)";
    return std::nullopt;
}

std::string tun_denied() noexcept {
    UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
    if (fd) return "";
    int err = errno;
    std::string who = active() ? "uid " + std::to_string(joined().outside_uid) : "this user";
    struct stat st {};
    std::string mode;
    if (::stat("/dev/net/tun", &st) == 0) {
        char m[8];
        std::snprintf(m, sizeof m, "%04o", st.st_mode & 07777);
        mode = std::string(" (mode ") + m + ")";
    }
    if (err == EACCES || err == EPERM)
        return "/dev/net/tun" + mode + " is not usable by " + who +
            ": tap/tun interfaces of a rootless lab need it readable and writable by the user (Debian "
            "makes it "
            "mode 0666: chmod 0666 /dev/net/tun), or run the lab as root";
    return "";
}

}  // namespace labctl::userns
