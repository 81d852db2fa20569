#include "state/state.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "base/error.hpp"
#include "base/io.hpp"

namespace labctl::state {

namespace {

using Json = nlohmann::json;

// Opens an existing directory that must be ours: not a symlink, owned by our euid, not
// writable by others. An empty fd when it does not exist. Relative to `parent`.
UniqueFd open_existing_private_dir(int parent, const std::string& name, const std::string& shown) {
    UniqueFd fd(::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOENT) return fd;
        if (errno == ELOOP || errno == ENOTDIR)
            throw LabError("state directory " + shown + " is a symlink or not a directory; refusing to use it");
        throw_last_errno("state directory " + shown + ": opening");
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw_last_errno("state directory " + shown + ": stat");
    if (st.st_uid != ::geteuid())
        throw LabError("state directory " + shown + " belongs to uid " + std::to_string(st.st_uid) +
                       ", not to us; refusing to use it");
    if (st.st_mode & 022)
        throw LabError("state directory " + shown + " is writable by others (mode " +
                       std::to_string(st.st_mode & 0777) + "); refusing to use it");
    return fd;
}

// The same, created (mode 0700) when absent.
UniqueFd open_private_dir(int parent, const std::string& name, const std::string& shown) {
    if (::mkdirat(parent, name.c_str(), 0700) != 0 && errno != EEXIST)
        throw_last_errno("state directory " + shown + ": creating");
    UniqueFd fd = open_existing_private_dir(parent, name, shown);
    if (!fd) throw_last_errno("state directory " + shown + ": opening");
    return fd;
}

UniqueFd open_root() {
    std::string root = state_root();
    // Parents of the root (e.g. /run) are the system's; only the root itself is checked.
    auto slash = root.find_last_of('/');
    std::string parent = slash == 0 ? "/" : root.substr(0, slash);
    UniqueFd pfd(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!pfd) throw_last_errno("state directory " + parent + ": opening");
    return open_private_dir(pfd.get(), root.substr(slash + 1), root);
}

// Removes everything under dirfd (no symlink is followed: unlinkat removes the link).
void remove_tree(int dirfd, const std::string& shown) {
    UniqueFd dup(::dup(dirfd));
    if (!dup) throw_last_errno(shown + ": dup");
    DIR* d = ::fdopendir(dup.get());
    if (!d) throw_last_errno(shown + ": reading");
    dup.release();
    std::vector<std::pair<std::string, bool>> entries;
    while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n == "." || n == "..") continue;
        entries.emplace_back(n, e->d_type == DT_DIR);
    }
    ::closedir(d);
    for (const auto& [n, is_dir] : entries) {
        if (is_dir) {
            UniqueFd sub(::openat(dirfd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (sub) remove_tree(sub.get(), shown + "/" + n);
            if (::unlinkat(dirfd, n.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT)
                throw_last_errno(shown + "/" + n + ": removing");
        } else if (::unlinkat(dirfd, n.c_str(), 0) != 0 && errno != ENOENT) {
            throw_last_errno(shown + "/" + n + ": removing");
        }
    }
}

// Every entry point taking a lab name: a name that is not a lab's never becomes a path.
void require_lab_name(const std::string& lab) {
    if (!is_lab_name(lab)) throw LabError("\"" + lab + "\" is not a lab name");
}

// Beside the labs' directories, never one of them: lab names have no '.'.
constexpr const char* kLockDir = ".locks";

}  // namespace

bool is_lab_name(const std::string& name) {
    if (name.empty() || name.size() > 16 || name[0] < 'a' || name[0] > 'z') return false;
    return std::all_of(name.begin(), name.end(),
                       [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; });
}

namespace {
std::string& default_root() {
    static std::string root = "/run/labctl";
    return root;
}
}  // namespace

void set_default_root(const std::string& root) { default_root() = root; }

namespace {
std::string& keeper_tag() {
    static std::string tag;
    return tag;
}
}  // namespace

void set_keeper(const std::string& tag) { keeper_tag() = tag; }

std::string state_root() {
    const char* env = ::getenv("LABCTL_STATE_DIR");
    std::string root = env && *env ? env : default_root();
    while (root.size() > 1 && root.back() == '/') root.pop_back();
    if (root.empty() || root[0] != '/') throw LabError("LABCTL_STATE_DIR must be an absolute path");
    return root;
}

LabLock::LabLock(const std::string& lab, const std::atomic<bool>* cancel) {
    require_lab_name(lab);
    UniqueFd root = open_root();
    UniqueFd locks = open_private_dir(root.get(), kLockDir, state_root() + "/" + kLockDir);
    std::string shown = state_root() + "/" + kLockDir + "/" + lab + ".lock";
    fd_.reset(::openat(locks.get(), (lab + ".lock").c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd_) {
        if (errno == ELOOP) throw LabError(shown + " is a symlink; refusing to use it");
        throw_last_errno(shown + ": opening");
    }
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) throw_last_errno(shown + ": stat");
    if (st.st_uid != ::geteuid() || !S_ISREG(st.st_mode))
        throw LabError(shown + " is not a regular file of ours; refusing to use it");
    while (::flock(fd_.get(), LOCK_EX) != 0) {
        if (errno != EINTR) throw_last_errno(shown + ": locking");
        if (cancel && cancel->load())
            throw LabError("interrupted while waiting for lab " + lab + "'s lock (another labctl holds it)", EINTR);
    }
}

Journal::Journal(std::string lab, std::string dir, UniqueFd fd)
    : lab_(std::move(lab)), dir_(std::move(dir)), fd_(std::move(fd)) {}

Journal Journal::begin(const std::string& lab, const std::string& source, const std::string& topology_text) {
    require_lab_name(lab);
    UniqueFd root = open_root();
    std::string dir = state_root() + "/" + lab;
    UniqueFd labdir = open_private_dir(root.get(), lab, dir);
    UniqueFd fd(
        ::openat(labdir.get(), "journal", O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) {
        if (errno == EEXIST) throw LabError("lab " + lab + " already has a journal in " + dir);
        throw_last_errno(dir + "/journal: creating");
    }
    // Until the first record is whole, nothing was made: a failure (ENOSPC) removes the
    // directory again instead of leaving a lab that `status` calls incomplete.
    try {
        UniqueFd topo(
            ::openat(labdir.get(), "topology.json", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!topo) throw_last_errno(dir + "/topology.json: creating");
        write_all(topo.get(), topology_text, dir + "/topology.json: writing");
        if (!keeper_tag().empty()) {
            UniqueFd keeper(
                ::openat(labdir.get(), "keeper", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
            if (!keeper) throw_last_errno(dir + "/keeper: creating");
            write_all(keeper.get(), keeper_tag() + "\n", dir + "/keeper: writing");
        }
        Journal j(lab, dir, std::move(fd));
        Json rec = {
            {"event", "begin"},
            {"lab", lab},
            {"source", source},
            {"pid", ::getpid()},
            {"time",
             std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                 .count()}};
        j.append(rec.dump());
        return j;
    } catch (...) {
        try {
            remove_tree(labdir.get(), dir);
            ::unlinkat(root.get(), lab.c_str(), AT_REMOVEDIR);
        } catch (const std::exception&) {
            // The original failure is the one to report.
        }
        throw;
    }
}

Journal Journal::reopen(const std::string& lab) {
    require_lab_name(lab);
    UniqueFd root = open_root();
    std::string dir = state_root() + "/" + lab;
    UniqueFd labdir = open_private_dir(root.get(), lab, dir);
    UniqueFd fd(::openat(labdir.get(), "journal", O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) throw_last_errno(dir + "/journal: opening");
    return Journal(lab, dir, std::move(fd));
}

void Journal::append(const std::string& json_line) {
    // One write() per record: a crash leaves whole records and at most one torn line.
    write_all(fd_.get(), json_line + "\n", dir_ + "/journal: writing");
}

void Journal::netns(const RecordedNetns& n) {
    append(Json{{"event", "netns"},
                {"name", n.name},
                {"dev", static_cast<std::uint64_t>(n.dev)},
                {"ino", static_cast<std::uint64_t>(n.ino)},
                {"cookie", n.cookie},
                {"file_dev", static_cast<std::uint64_t>(n.file_dev)},
                {"file_ino", static_cast<std::uint64_t>(n.file_ino)}}
               .dump());
}

void Journal::daemon_started(const RecordedDaemon& d) {
    append(Json{{"event", "daemon"},
                {"node", d.node},
                {"argv", d.argv},
                {"pid", d.pid},
                {"start_time", d.start_time},
                {"log", d.log}}
               .dump());
}

void Journal::netns_removed(const std::string& name) {
    append(Json{{"event", "netns-removed"}, {"name", name}}.dump());
}

void Journal::daemons_stopped(const std::string& node) {
    append(Json{{"event", "daemons-stopped"}, {"node", node}}.dump());
}

void Journal::runtime(const std::string& json) { append(Json{{"event", "runtime"}, {"state", json}}.dump()); }

void Journal::topology_replaced(const std::string& topology_text, const std::string& source) {
    UniqueFd labdir(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!labdir) throw_last_errno(dir_ + ": opening");
    UniqueFd topo(
        ::openat(labdir.get(), "topology.json.new", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!topo) throw_last_errno(dir_ + "/topology.json.new: creating");
    write_all(topo.get(), topology_text, dir_ + "/topology.json.new: writing");
    if (::renameat(labdir.get(), "topology.json.new", labdir.get(), "topology.json") != 0)
        throw_last_errno(dir_ + "/topology.json: replacing");
    append(Json{{"event", "applied"}, {"source", source}}.dump());
}

void Journal::complete() { append(Json{{"event", "up"}}.dump()); }

std::string Journal::log_dir() {
    std::string dir = dir_ + "/logs";
    UniqueFd labdir(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!labdir) throw_last_errno(dir_ + ": opening");
    open_private_dir(labdir.get(), "logs", dir);
    return dir;
}

std::optional<LabRecord> Journal::load(const std::string& lab) {
    require_lab_name(lab);
    UniqueFd root = open_root();
    UniqueFd labdir = open_existing_private_dir(root.get(), lab, state_root() + "/" + lab);
    if (!labdir) return std::nullopt;
    LabRecord rec;
    rec.lab = lab;
    UniqueFd fd(::openat(labdir.get(), "journal", O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOENT) return rec;  // a directory without journal: nothing was made
        throw_last_errno(state_root() + "/" + lab + "/journal: opening");
    }
    // The journal only grows (one write per record): a file this process has read before,
    // with the same identity, size and modification time, is read from memory (a runtime
    // change reads it twice, and a 1,000-node lab's journal takes milliseconds to parse).
    struct stat st {};
    const bool stat_ok = ::fstat(fd.get(), &st) == 0;
    struct Cached {
        dev_t dev;
        ino_t ino;
        off_t size;
        timespec mtime;
        LabRecord rec;
    };
    static std::mutex cache_mutex;
    static std::unordered_map<std::string, Cached> cache;
    const std::string key = state_root() + "/" + lab;
    auto same = [&](const Cached& c) {
        return c.dev == st.st_dev && c.ino == st.st_ino && c.size == st.st_size &&
            c.mtime.tv_sec == st.st_mtim.tv_sec && c.mtime.tv_nsec == st.st_mtim.tv_nsec;
    };
    if (stat_ok) {
        std::lock_guard<std::mutex> guard(cache_mutex);
        auto it = cache.find(key);
        if (it != cache.end() && same(it->second)) return it->second.rec;
    }
    std::string text = read_all(fd.get(), state_root() + "/" + lab + "/journal: reading");
    // Namespace name -> its place in rec.namespaces: a lab of N nodes loads in O(N).
    std::unordered_map<std::string, std::size_t> index;
    std::size_t pos = 0;
    while (pos < text.size()) {
        auto nl = text.find('\n', pos);
        if (nl == std::string::npos) break;  // torn last record
        Json r = Json::parse(text.substr(pos, nl - pos), nullptr, false);
        pos = nl + 1;
        if (!r.is_object() || !r.contains("event")) continue;
        std::string ev = r["event"].get<std::string>();
        if (ev == "begin") {
            rec.source = r.value("source", "");
            rec.pid = r.value("pid", 0);
            rec.started = r.value("time", 0LL);
        } else if (ev == "netns" || ev == "netns-created") {
            // "netns-created" (older versions, after all namespaces were made) carries
            // dev/ino only; their "netns-intent" names without identity are ignored:
            // nothing is done to a name whose holder is unknown.
            Json list = ev == "netns" ? Json::array({r}) : r.value("namespaces", Json::array());
            for (const auto& n : list) {
                if (!n.is_object() || !n.contains("name") || !n["name"].is_string()) continue;
                RecordedNetns x;
                x.name = n["name"].get<std::string>();
                x.dev = static_cast<dev_t>(n.value("dev", std::uint64_t{0}));
                x.ino = static_cast<ino_t>(n.value("ino", std::uint64_t{0}));
                x.cookie = n.value("cookie", std::uint64_t{0});
                x.file_dev = static_cast<dev_t>(n.value("file_dev", std::uint64_t{0}));
                x.file_ino = static_cast<ino_t>(n.value("file_ino", std::uint64_t{0}));
                if (x.ino == 0) continue;
                auto [at, fresh] = index.emplace(x.name, rec.namespaces.size());
                if (fresh) rec.namespaces.push_back(x);
                else rec.namespaces[at->second] = x;
            }
        } else if (ev == "netns-removed") {
            // Marked here, dropped below: `index` keeps its places meanwhile.
            if (auto at = index.find(r.value("name", "")); at != index.end()) rec.namespaces[at->second].ino = 0;
        } else if (ev == "daemon") {
            RecordedDaemon d;
            d.node = r.value("node", "");
            d.argv = r.value("argv", std::vector<std::string>{});
            d.pid = r.value("pid", 0);
            d.start_time = r.value("start_time", 0ULL);
            d.log = r.value("log", "");
            rec.daemons.push_back(d);
        } else if (ev == "daemons-stopped") {
            std::string node = r.value("node", "");
            std::erase_if(rec.daemons, [&](const RecordedDaemon& d) { return d.node == node; });
        } else if (ev == "applied") {
            if (r.contains("source") && r["source"].is_string()) rec.source = r["source"].get<std::string>();
        } else if (ev == "runtime") {
            rec.runtime = r.value("state", "");
        } else if (ev == "up") {
            rec.complete = true;
        }
    }
    std::erase_if(rec.namespaces, [](const RecordedNetns& n) { return n.ino == 0; });
    // Kept only when what was read is what was measured (no record was appended between).
    if (stat_ok && static_cast<off_t>(text.size()) == st.st_size) {
        std::lock_guard<std::mutex> guard(cache_mutex);
        cache[key] = Cached{st.st_dev, st.st_ino, st.st_size, st.st_mtim, rec};
    }
    return rec;
}

std::vector<std::string> Journal::list() {
    UniqueFd root = open_root();
    UniqueFd dup(::dup(root.get()));
    DIR* d = ::fdopendir(dup.get());
    if (!d) throw_last_errno(state_root() + ": reading");
    dup.release();
    std::vector<std::string> labs;
    while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (!is_lab_name(n) || e->d_type != DT_DIR) continue;
        labs.push_back(n);
    }
    ::closedir(d);
    std::sort(labs.begin(), labs.end());
    return labs;
}

std::string Journal::topology_text(const std::string& lab) {
    require_lab_name(lab);
    UniqueFd root = open_root();
    std::string shown = state_root() + "/" + lab + "/topology.json";
    UniqueFd labdir = open_existing_private_dir(root.get(), lab, state_root() + "/" + lab);
    if (!labdir) throw KernelError(ENOENT, state_root() + "/" + lab + ": opening");
    UniqueFd fd(::openat(labdir.get(), "topology.json", O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) throw_last_errno(shown + ": opening");
    return read_all(fd.get(), shown + ": reading");
}

void Journal::remove(const std::string& lab) {
    require_lab_name(lab);
    UniqueFd root = open_root();
    UniqueFd labdir = open_existing_private_dir(root.get(), lab, state_root() + "/" + lab);
    if (!labdir) return;
    remove_tree(labdir.get(), state_root() + "/" + lab);
    if (::unlinkat(root.get(), lab.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT)
        throw_last_errno(state_root() + "/" + lab + ": removing");
}

}  // namespace labctl::state
