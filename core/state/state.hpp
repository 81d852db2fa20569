#pragma once
// A lab's state directory and journal, and the per-lab lock.
//
// Layout under the state root (/run/labctl, or $LABCTL_STATE_DIR), every directory
// mode 0700 and owned by us; symlinks are never followed:
//   .locks/<lab>.lock    flock()ed while an up/down/verify of the lab runs; never removed,
//                        so two processes never hold locks on different files of one name.
//                        The dot keeps it apart from every lab: no lab name has one, and
//                        every function here refuses a name that is not a lab name
//                        (a lab called `locks` once was the lock directory)
//   <lab>/journal        JSON lines, appended BEFORE each object is created; a namespace's
//                        record carries its identity (namespace dev/ino and cookie, and the
//                        file under /run/netns) and is written before its name exists
//   <lab>/topology.json  the topology the lab was built from
//   <lab>/keeper         rootless labs only: "PID STARTTIME" of the keeper holding them
//   <lab>/logs/          output of node exec commands and daemons
// The journal is what `down` works from: never the topology file, never name patterns.

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/unique_fd.hpp"

namespace labctl::state {

// $LABCTL_STATE_DIR, else /run/labctl (a rootless process: the default that
// set_default_root() gave, see userns/).
std::string state_root();

// The state root used when $LABCTL_STATE_DIR is not set.
void set_default_root(const std::string& root);

// Rootless: the keeper holding this process's labs ("PID STARTTIME"), written by
// Journal::begin to <lab>/keeper so that `status` can tell a lab whose keeper ended.
void set_keeper(const std::string& tag);

// Whether `name` is a lab name (^[a-z][a-z0-9-]{0,15}$): only those reach the state root.
bool is_lab_name(const std::string& name);

// The lab's lock, held until destroyed. Blocks while another process holds it (up and
// down of one lab serialize). The fd is close-on-exec: children never inherit it.
// Throws KernelError; LabError when a path is a symlink or not ours, or `lab` is not a
// lab name.
class LabLock {
public:
    // With `cancel`: a signal (EINTR) that has set *cancel ends the wait with
    // LabError("interrupted while waiting for ..."), EINTR; nothing else was made.
    explicit LabLock(const std::string& lab, const std::atomic<bool>* cancel = nullptr);
    LabLock(LabLock&&) = default;
    LabLock& operator=(LabLock&&) = default;

private:
    UniqueFd fd_;
};

// A namespace as the journal knows it (netns::NetnsIdentity, field for field): nothing
// is ever done to a name whose holder does not match it.
struct RecordedNetns {
    std::string name;
    dev_t dev = 0;
    ino_t ino = 0;
    std::uint64_t cookie = 0;  // 0: written by an older labctl (dev/ino only)
    dev_t file_dev = 0;
    ino_t file_ino = 0;  // 0: unknown
};

struct RecordedDaemon {
    std::string node;
    std::vector<std::string> argv;
    pid_t pid = 0;
    unsigned long long start_time = 0;
    std::string log;
};

// What the journal says about a lab.
struct LabRecord {
    std::string lab;
    std::string source;     // the topology file it came from ("" for text/dict)
    pid_t pid = 0;          // the labctl process that ran `up`
    long long started = 0;  // unix time of `up`
    bool complete = false;  // `up` finished
    std::vector<RecordedNetns> namespaces;
    std::vector<RecordedDaemon> daemons;
    std::string runtime;  // JSON of the runtime changes in force ("" for none)
};

// The journal of one lab; created by begin(), read by load(), removed by remove().
class Journal {
public:
    // Starts a new journal (and state directory) for `lab`, saving the topology text.
    // On failure (a full disk) the state directory is removed again: no phantom lab.
    // Throws KernelError, LabError (symlinks, foreign owner, a journal already there).
    static Journal begin(const std::string& lab, const std::string& source, const std::string& topology_text);
    // The record of `lab`, nullopt when it has no state directory. A torn last line
    // (a crash while appending) is ignored. Throws KernelError, LabError.
    static std::optional<LabRecord> load(const std::string& lab);
    // Every lab with a state directory, sorted; entries whose names are not lab names
    // (labctl's own, or anyone else's) are not labs. Throws KernelError.
    static std::vector<std::string> list();
    // Reopens the journal of an existing lab to append. Throws KernelError.
    static Journal reopen(const std::string& lab);
    // The saved topology text. Throws KernelError, LabError (symlink, foreign owner).
    static std::string topology_text(const std::string& lab);
    // Removes the lab's state directory. A missing one is fine. Throws KernelError,
    // LabError (a symlink or a directory not ours: refused, nothing removed).
    static void remove(const std::string& lab);

    // Appended once a namespace and its file exist, before the file gets its name.
    // Safe to call from several threads at once (one write() per record).
    void netns(const RecordedNetns& ns);
    // The namespace `name` was removed (apply removing or replacing a node): it is no
    // longer one of the lab's.
    void netns_removed(const std::string& name);
    void daemon_started(const RecordedDaemon& daemon);
    // The node's daemons were stopped (apply restarting them, a node powered off).
    void daemons_stopped(const std::string& node);
    // The runtime changes in force now (link down, impairments, nodes stopped), as JSON.
    void runtime(const std::string& json);
    // `apply` finished: the lab now runs `topology_text` (written to topology.json, by
    // rename, so a reader sees the old file or the new one). Throws KernelError.
    // `source`: the file it came from ("" for text), shown by status from now on.
    void topology_replaced(const std::string& topology_text, const std::string& source);
    void complete();

    // The lab's log directory (created on first use), e.g. /run/labctl/lab/logs.
    std::string log_dir();
    const std::string& dir() const noexcept { return dir_; }

private:
    Journal(std::string lab, std::string dir, UniqueFd fd);
    void append(const std::string& json_line);

    std::string lab_;
    std::string dir_;
    UniqueFd fd_;
};

}  // namespace labctl::state
