#include "engine/teardown.hpp"

#include "engine/chunks.hpp"
#include "engine/internal.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "netns/netns.hpp"
#include "proc/proc.hpp"

namespace labctl::engine::detail {

namespace {

netns::NetnsIdentity identity_of(const state::RecordedNetns& r) {
    return {r.dev, r.ino, r.cookie, r.file_dev, r.file_ino};
}

// Namespaces of the lab whose names are gone or taken by another, but which may live on
// unmounted, held by processes: found through /proc/<pid>/ns/net, each accepted only
// when its cookie is the recorded one, and then held through `pinned`.
std::vector<proc::NetnsId> find_unnamed(const std::vector<const state::RecordedNetns*>& missing,
                                        std::vector<UniqueFd>& pinned) {
    std::vector<proc::NetnsId> wanted, found;
    for (const auto* r : missing)
        if (r->cookie != 0) wanted.emplace_back(r->dev, r->ino);
    if (wanted.empty()) return found;
    for (const pid_t pid : proc::pids_in_any_netns(wanted)) {
        UniqueFd fd(::open(("/proc/" + std::to_string(pid) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
        struct stat st {};
        if (!fd || ::fstat(fd.get(), &st) != 0) continue;  // gone meanwhile
        const proc::NetnsId id{st.st_dev, st.st_ino};
        if (std::find(found.begin(), found.end(), id) != found.end()) continue;
        auto rec = std::find_if(missing.begin(), missing.end(),
                                [&](const auto* r) { return r->dev == id.first && r->ino == id.second; });
        if (rec == missing.end() || netns::cookie_of(fd.get()) != (*rec)->cookie) continue;
        found.push_back(id);
        pinned.push_back(std::move(fd));
    }
    return found;
}

}  // namespace

void teardown(const state::LabRecord& rec, ForeignNames foreign) {
    std::vector<std::string> problems;
    bool ours_left = false;  // something of the lab's own remains: keep the journal

    std::vector<std::pair<std::string, netns::NetnsIdentity>> recorded;
    std::vector<const state::RecordedNetns*> records;
    for (const auto& ns : rec.namespaces) {
        if (!lab_namespace_name(rec.lab, ns.name)) {
            problems.push_back("the journal names namespace '" + ns.name + "', which is not one of lab " + rec.lab +
                               "'s (" + rec.lab + "-<node>); left alone");
            continue;
        }
        recorded.emplace_back(ns.name, identity_of(ns));
        records.push_back(&ns);
    }
    auto stopping = [&](const auto& stop) {
        try {
            stop();
        } catch (const std::exception& e) {
            problems.push_back(std::string("stopping the lab's processes: ") + e.what());
            ours_left = true;
        }
    };
    // What is held at once (a pidfd per process signalled, an fd and its duplicate per
    // namespace inspected) is bounded by the chunk, not by the lab.
    const std::size_t chunk = namespaces_at_once();
    // The daemons first, all of them, wherever they run: they are known by pid and start
    // time, and what they started inside is stopped with their namespace's chunk.
    std::vector<proc::ProcessId> daemons;
    for (const auto& d : rec.daemons) daemons.push_back({d.pid, d.start_time});
    for_each_chunk(daemons.size(), chunk, [&](std::size_t first, std::size_t last) {
        stopping([&] {
            proc::stop_all({daemons.begin() + static_cast<long>(first), daemons.begin() + static_cast<long>(last)}, {},
                           kStopGrace);
        });
    });
    for_each_chunk(recorded.size(), chunk, [&](std::size_t first, std::size_t last) {
        const std::vector<std::pair<std::string, netns::NetnsIdentity>> part(
            recorded.begin() + static_cast<long>(first), recorded.begin() + static_cast<long>(last));
        auto found = netns::inspect_many(part);
        // Held until the chunk's names are removed: while held, a namespace's dev/ino names it alone.
        std::vector<UniqueFd> pinned;
        std::vector<proc::NetnsId> ids;
        std::vector<const state::RecordedNetns*> missing;
        std::vector<std::pair<std::string, netns::NetnsIdentity>> owned;
        for (std::size_t i = 0; i < found.size(); ++i) {
            auto& f = found[i];
            const state::RecordedNetns* r = records[first + i];
            switch (f.found) {
                case netns::Found::ours:
                    ids.emplace_back(r->dev, r->ino);
                    pinned.push_back(std::move(f.fd));
                    owned.push_back(part[i]);
                    break;
                case netns::Found::file_only:
                    owned.push_back(part[i]);
                    missing.push_back(r);
                    break;
                case netns::Found::foreign:
                    if (foreign == ForeignNames::report)
                        problems.push_back("namespace " + part[i].first + " " + f.why + "; left alone");
                    missing.push_back(r);
                    break;
                case netns::Found::absent: missing.push_back(r); break;
            }
        }
        // A process inside keeps a namespace alive after its name is gone: stop them first.
        stopping([&] {
            for (const auto& id : find_unnamed(missing, pinned)) ids.push_back(id);
            proc::stop_all({}, ids, kStopGrace);
        });
        auto failures = netns::remove_owned_many(owned);
        if (!failures.empty()) ours_left = true;
        for (auto& failure : failures) problems.push_back(std::move(failure));
    });
    if (!ours_left) state::Journal::remove(rec.lab);
    if (!problems.empty())
        throw LabError("lab " + rec.lab + ": " + join(problems, "; ") +
                       (ours_left ? "; the journal is kept: run `labctl down " + rec.lab + "` again" : ""));
}

std::string owner_of(const std::string& netns, const std::string& except) {
    try {
        for (const auto& lab : state::Journal::list()) {
            if (lab == except) continue;
            auto rec = state::Journal::load(lab);
            if (!rec) continue;
            for (const auto& ns : rec->namespaces)
                if (ns.name == netns) return lab;
        }
    } catch (const std::exception&) {}
    return "";
}

}  // namespace labctl::engine::detail
