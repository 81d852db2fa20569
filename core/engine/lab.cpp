#include "engine/lab.hpp"

#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <regex>
#include <sstream>
#include <sys/stat.h>

#include "base/error.hpp"
#include "engine/node_command.hpp"
#include "engine/teardown.hpp"
#include "engine/ready.hpp"
#include "netns/netns.hpp"
#include "proc/proc.hpp"
#include "engine/internal.hpp"
#include "plan/plan.hpp"
#include "realize/realize.hpp"
#include "rtnl/rtnl.hpp"
#include "state/state.hpp"
#include "topology/load.hpp"
#include "userns/userns.hpp"

namespace labctl::engine {

using namespace topology;
using Json = nlohmann::json;

namespace detail {

bool valid_lab_name(const std::string& s) {
    static const std::regex re("^[a-z][a-z0-9-]{0,15}$");
    return std::regex_match(s, re);
}

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
    std::string out;
    for (const auto& p : parts) out += (out.empty() ? "" : sep) + p;
    return out;
}

// Whether `name` is a namespace name `lab` can own: `<lab>-<node>`, one path component.
// A journal naming anything else was not written by labctl (or was altered).
bool lab_namespace_name(const std::string& lab, const std::string& name) {
    const std::string prefix = lab + "-";
    return name.size() > prefix.size() && name.starts_with(prefix) && name.find('/') == std::string::npos;
}

// The last `max_lines` lines of `text`.
std::string tail(const std::string& text, std::size_t max_lines) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    std::size_t first = lines.size() > max_lines ? lines.size() - max_lines : 0;
    std::string out;
    for (std::size_t i = first; i < lines.size(); ++i) out += (out.empty() ? "" : "\n") + lines[i];
    return out;
}

// What a lab holds at once is bounded (realize, chunks.hpp), but verify and down size
// their chunks by the soft limit: the hard limit lets them take bigger ones.
void raise_fd_limit() {
    struct rlimit rl {};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }
}

void rename(Topology& topo, const std::string& name) {
    topo.name = name;
    for (auto& n : topo.nodes) n.netns = name + "-" + n.name;
}

}  // namespace detail

using namespace detail;

std::atomic<bool>& interrupt_flag() {
    static std::atomic<bool> flag{false};
    return flag;
}

void require_privileges() {
    // Without privileges labctl runs in a user namespace of the caller's (userns/); when
    // that could not be entered, its reason is the one to give.
    if (!userns::join_error().empty()) throw LabError(userns::join_error(), EPERM);
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (::syscall(SYS_capget, &header, data) != 0) throw_last_errno("reading our capabilities");
    auto has = [&](int cap) { return (data[cap / 32].effective >> (cap % 32)) & 1u; };
    std::vector<std::string> missing;
    if (!has(CAP_NET_ADMIN)) missing.push_back("CAP_NET_ADMIN");
    if (!has(CAP_SYS_ADMIN)) missing.push_back("CAP_SYS_ADMIN");
    if (!missing.empty())
        throw LabError("labctl needs " + join(missing, " and ") +
                           " to build labs (namespaces and interfaces); run it as root, e.g. with sudo",
                       EPERM);
}

Lab::Lab(Topology topo, std::string topology_text, const std::string& instance)
    : topo_(std::move(topo)), text_(std::move(topology_text)) {
    if (instance.empty() || instance == topo_.name) return;
    if (!valid_lab_name(instance))
        throw UsageError("\"" + instance + "\" is not a lab name (^[a-z][a-z0-9-]{0,15}$)", EINVAL);
    rename(topo_, instance);
    instance_ = true;
    // The saved copy names the lab it runs as: attach refuses a copy naming another lab.
    Json doc = Json::parse(text_, nullptr, false);
    if (doc.is_object()) {
        doc["name"] = instance;
        text_ = doc.dump(2);
    }
}

Lab Lab::from_file(const std::string& path, const std::string& instance) {
    // Read once: what is saved in the state directory is exactly what was validated.
    std::string text = read_topology_file(path);
    Topology t = load_text(text, path);
    Lab lab(std::move(t), std::move(text), instance);
    // Node commands run in the file's folder (node_command.hpp).
    std::error_code ec;
    auto folder = std::filesystem::absolute(std::filesystem::path(path), ec).parent_path();
    if (!ec) lab.folder_ = folder.string();
    return lab;
}

Lab Lab::from_text(const std::string& text, const std::string& source, const std::string& instance) {
    return Lab(load_text(text, source), text, instance);
}

Lab Lab::attach(const std::string& name) {
    if (!valid_lab_name(name)) throw UsageError("\"" + name + "\" is not a lab name");
    auto rec = state::Journal::load(name);
    if (!rec || !rec->complete) throw UsageError("lab " + name + " is not up");
    std::string text = state::Journal::topology_text(name);
    Lab lab(load_saved_text(text, state::state_root() + "/" + name + "/topology.json"), text);
    // The saved copy must describe this lab: anything else would aim ping/exec/verify
    // at another lab's namespaces (an instance's copy carries the instance's name).
    if (lab.name() != name)
        throw LabError("the saved topology of lab " + name + " is lab " + lab.name() + "'s; refusing to use it");
    // Node commands a runtime change runs (node start) run where `up` ran them: the
    // folder of the file the lab was built from (source is an absolute path; "" from text).
    if (!rec->source.empty() && rec->source.front() == '/')
        lab.folder_ = std::filesystem::path(rec->source).parent_path().string();
    return lab;
}

std::string Lab::journal_source() const {
    // The journal keeps the file's absolute path: a later `node start` runs the node's
    // commands in its folder, whatever the caller's working directory.
    std::string source = topo_.source;
    if (!folder_.empty() && !source.empty())
        source = (std::filesystem::path(folder_) / std::filesystem::path(source).filename()).string();
    return source;
}

bool Lab::is_up() const {
    auto rec = state::Journal::load(topo_.name);
    return rec && rec->complete;
}

bool Lab::runs_this_topology() const {
    if (!is_up()) return false;
    if (text_.empty()) return true;
    // The same document, whatever its spacing and key order; the name is the lab's.
    Json ours = Json::parse(text_, nullptr, false);
    Json theirs = Json::parse(state::Journal::topology_text(topo_.name), nullptr, false);
    if (ours.is_object()) ours.erase("name");
    if (theirs.is_object()) theirs.erase("name");
    return !ours.is_discarded() && ours == theirs;
}

const Node& Lab::node(const std::string& name) const {
    auto n = topo_.find_node(name);
    if (!n) throw UsageError("lab " + topo_.name + " has no node \"" + name + "\"");
    return topo_.nodes[*n];
}

UpResult Lab::up(bool verify) {
    require_privileges();
    raise_fd_limit();
    require_fd_budget(topo_);
    // Missing kernel features are found before anything of the lab is touched.
    auto missing = rtnl::missing_features(realize::features_needed(topo_));
    if (!missing.empty()) {
        std::vector<std::string> why;
        for (auto f : missing) why.push_back(rtnl::missing_feature_message(f));
        throw LabError("lab " + topo_.name + " cannot be built here: " + join(why, "; "), EOPNOTSUPP);
    }
    // Rootless: the user namespace maps the caller's uid alone (as root); nobody else exists.
    if (userns::active())
        for (const auto& n : topo_.nodes)
            if (!n.user.empty())
                throw LabError("lab " + topo_.name + " cannot be built rootless: node " + n.name + " runs as user \"" +
                                   n.user +
                                   "\", and a rootless lab has only your own uid (root inside, without "
                                   "\"user\"); run it as root",
                               EOPNOTSUPP);
    if (text_.empty()) text_ = "{}";

    UpResult result;
    state::LabLock lock(topo_.name, &interrupt_flag());
    if (auto rec = state::Journal::load(topo_.name)) {
        if (rec->complete)
            throw LabError("lab " + topo_.name + " is already up; run `labctl down " + topo_.name + "` first", EEXIST);
        detail::teardown(*rec, detail::ForeignNames::report);
        result.notes.push_back("removed the leftovers of an interrupted `up` of lab " + topo_.name);
    }
    // Two labs whose namespace names meet (lab a node b-c, lab a-b node c) cannot both be
    // up. Refused here before anything is touched; when both race past this check, the
    // kernel's exclusive creation of the name decides (netns::create_many).
    auto name_taken = [&](const std::string& netns) {
        std::string owner = detail::owner_of(netns, topo_.name);
        return LabError("namespace " + netns + " already exists and is not part of lab " + topo_.name +
                            (owner.empty() ? std::string(" (labctl never touches it); remove it or rename the lab")
                                           : ": it belongs to lab " + owner +
                                     " (two labs whose namespace names meet cannot both be up); "
                                     "take lab " +
                                     owner + " down or rename one of them"),
                        EEXIST);
    };
    for (const auto& n : topo_.nodes)
        if (netns::exists(n.netns)) throw name_taken(n.netns);

    auto journal = state::Journal::begin(topo_.name, journal_source(), text_);
    // up = plan(file, nothing): every operation of the lab, executed stage by stage.
    const plan::Plan p = plan::plan(topo_, plan::Observed{});
    realize::Options options;
    options.link_timeout = kLinkTimeout;
    options.cancel = &interrupt_flag();
    std::vector<detail::StartedDaemon> started;
    // Undoes only what this process made: the journal holds the identities it recorded.
    auto undo_all = [&] {
        if (auto rec = state::Journal::load(topo_.name)) detail::teardown(*rec, detail::ForeignNames::quiet);
    };
    try {
        try {
            realize::execute(topo_, p, journal, make_hooks(topo_, journal, folder_, &started), options);
        } catch (const KernelError& e) {
            if (e.errno_value() != EEXIST) throw;
            // Another lab (or `ip netns add`) made one of the names first.
            for (const auto& n : topo_.nodes)
                if (std::string(e.what()).find("\"" + n.netns + "\"") != std::string::npos) throw name_taken(n.netns);
            throw;
        }
        detail::wait_for_started(topo_, started);
    } catch (const std::exception& e) {
        // Remove what was built; a failure to do so is said with the failure itself.
        std::string undo_error;
        try {
            undo_all();
        } catch (const std::exception& u) {
            undo_error = u.what();
        }
        int err = 0;
        if (auto* k = dynamic_cast<const KernelError*>(&e)) err = k->errno_value();
        if (auto* l = dynamic_cast<const LabError*>(&e)) err = l->errno_value();
        if (err == EINTR && dynamic_cast<const LabError*>(&e))
            throw LabError(std::string(e.what()) + "; removed what was built" +
                               (undo_error.empty() ? "" : "; and while removing the lab: " + undo_error),
                           EINTR);
        if (undo_error.empty()) throw;
        throw LabError(std::string(e.what()) + "; and while removing the lab: " + undo_error, err);
    }
    // Exit 3 means nothing is left: a failure from here on (a full disk for the last
    // record, EMFILE in the checks) removes the lab too.
    try {
        journal.complete();
        if (verify) result.checks = this->verify(false);
    } catch (const std::exception& e) {
        try {
            undo_all();
        } catch (const std::exception& undo) {
            throw LabError(std::string(e.what()) + "; and while removing the lab: " + undo.what());
        }
        throw;
    }
    return result;
}

bool Lab::down() { return engine::down(topo_.name); }

bool down(const std::string& name) {
    if (!valid_lab_name(name)) throw UsageError("\"" + name + "\" is not a lab name");
    require_privileges();
    state::LabLock lock(name);
    auto rec = state::Journal::load(name);
    if (!rec) return false;
    detail::teardown(*rec, detail::ForeignNames::report);
    return true;
}

std::vector<std::string> down_all() {
    require_privileges();
    std::vector<std::string> removed, problems;
    for (const auto& name : state::Journal::list()) {
        if (!valid_lab_name(name)) continue;
        try {
            if (down(name)) removed.push_back(name);
        } catch (const std::exception& e) {
            problems.push_back(e.what());
        }
    }
    if (!problems.empty()) throw LabError(join(problems, "; "));
    return removed;
}

std::string state_directory() { return state::state_root(); }

std::string lab_name_of(const std::string& arg) {
    struct stat st {};
    if (::stat(arg.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
        // Oversized files are refused as load_file refuses them, before being read.
        if (static_cast<std::size_t>(st.st_size) > kMaxFileBytes) return load_file(arg).name;
        // The name only: `down` of a lab whose file has since become invalid must work.
        Json doc = Json::parse(read_topology_file(arg), nullptr, false);
        if (doc.is_object() && doc.contains("name") && doc["name"].is_string() &&
            valid_lab_name(doc["name"].get<std::string>()))
            return doc["name"].get<std::string>();
        return load_file(arg).name;  // throws TopologyError saying what is wrong
    }
    if (valid_lab_name(arg)) return arg;
    if (::stat(arg.c_str(), &st) != 0)  // not a lab name: it was meant as a file
        throw TopologyError(arg, {{"", "cannot read: " + describe_errno(errno) + " (and it is not a lab name)"}});
    throw TopologyError(arg, {{"", "neither a topology file nor a lab name"}});
}

}  // namespace labctl::engine
