#pragma once
// The Lab facade: up, down, status, verify, ping, exec. The only API the CLI and the
// Python module use. Nothing here prints or exits; every failure is an exception:
//   TopologyError  bad input (nothing touched)
//   LabError       the operation failed or was refused (what `up` made is removed again)
//   KernelError    a kernel call failed (likewise), with its errno

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "capture/capture.hpp"
#include "ping/ping.hpp"
#include "plan/plan.hpp"
#include "topology/model.hpp"

namespace labctl::engine {

namespace detail {
struct Touch;
}

// The most echo requests one `ping` sends.
inline constexpr int kMaxPingCount = 65535;  // icmp_seq is 16 bits

struct CheckResult {
    topology::CheckKind kind = topology::CheckKind::ping;
    std::string name;        // the check's `name`, else "FROM -> TO" (see topology::Check::label)
    bool named = false;      // the check has a `name`
    double points = 1;       // what it is worth when ok
    int attempts = 1;        // more than 1 when retried (within_s)
    std::string from;        // as written ("h1", "h1:eth0")
    std::string to;          // as written
    std::string address;     // what was pinged (or connected to)
    std::uint16_t port = 0;  // tcp
    topology::Expect expect = topology::Expect::reachable;
    bool ok = false;                               // the outcome matched `expect`
    int sent = 0, received = 0;                    // tcp: 1 handshake tried, 0 or 1 completed
    double rtt_min = 0, rtt_avg = 0, rtt_max = 0;  // ms; 0 without replies; tcp: the handshake
    std::string reason;                            // why it was not answered ("Network is unreachable (ENETUNREACH)")
    // command checks: `from` is the node, `to` the command as text, `address` empty
    std::vector<std::string> run;
    int expect_exit = 0;
    std::optional<std::string> expect_stdout;
    std::optional<int> returncode;  // nullopt: it did not run to its end (killed, not started)
    std::string output;             // the end of its stdout and stderr
};

nlohmann::json to_json(const CheckResult& r);

// The sum of the points of the checks that hold, and of all of them.
struct Score {
    double score = 0, max_score = 0;
    bool any_weighted = false;  // a check has points other than 1
};
Score score_of(const std::vector<CheckResult>& checks);

struct UpResult {
    std::vector<CheckResult> checks;  // empty with verify=false
    std::vector<std::string> notes;   // e.g. leftovers of an interrupted up were removed
    bool checks_ok() const;
};

// A request the engine refuses after the file parsed, touching nothing (exit 2): `verify`
// of a file the running lab was not built from.
class RefusedError : public LabError {
public:
    using LabError::LabError;
    bool is_usage() const noexcept override { return true; }
};

struct ApplyResult {
    std::vector<plan::Change> changes;  // what was (or, dry run, would be) changed
    std::vector<CheckResult> checks;    // empty with verify=false or dry run
    std::vector<std::string> notes;
    bool brought_up = false;  // the lab was not up: apply did what up does
    bool checks_ok() const;
};

enum class NodeAction { stop, start, restart };

struct ExecResult {
    int returncode = 0;
    std::string out, err;
    bool timed_out = false;
};

struct Background {
    int pid = 0;
    unsigned long long start_time = 0;
    std::string log;
};

// What `labctl capture` captures: named interfaces, or every interface of the lab.
struct CaptureRequest {
    std::vector<std::string> interfaces;  // "NODE:IFNAME", in the order of the file's blocks
    bool all = false;                     // every interface of every node but lo and bridges
    capture::Options options;
};

struct PingOutcome {
    std::string address;
    ping::ProbeResult result;
};

class Lab {
public:
    // A lab described by a validated topology; touches nothing.
    // With `instance`, the lab runs under that name instead of the file's (namespaces
    // `<instance>-<node>`); LabError when it is not a lab name.
    explicit Lab(topology::Topology topo, std::string topology_text = {}, const std::string& instance = {});
    // Loads and validates FILE. Throws TopologyError.
    static Lab from_file(const std::string& path, const std::string& instance = {});
    // Validates JSON text; `source` names it in messages. Throws TopologyError.
    static Lab from_text(const std::string& text, const std::string& source, const std::string& instance = {});
    // A running lab, from its state directory. Throws LabError when it is not up.
    static Lab attach(const std::string& name);

    const topology::Topology& topology() const noexcept { return topo_; }
    const std::string& name() const noexcept { return topo_.name; }

    // Builds the lab, then (with verify) runs its checks. A failed check is reported in
    // the result, the lab stays up. Throws LabError/KernelError after removing everything
    // it made.
    UpResult up(bool verify = true);
    // Makes the running lab match this topology, touching only what differs (a lab not
    // up is brought up). dry_run: the changes only, nothing touched. A failure part-way
    // returns the lab to the topology it ran before, then throws LabError/KernelError.
    // `on_plan` sees the changes before any is made.
    ApplyResult apply(bool dry_run = false, bool verify = true,
                      const std::function<void(const std::vector<plan::Change>&)>& on_plan = {});
    // Runtime changes, kept until apply, down or the opposite change. `end` is
    // "node:ifname", either end of a link. Each returns what it changed. Throw LabError
    // for unknown names or a lab that is not up, KernelError for the kernel's refusals.
    std::vector<plan::Change> link_state(const std::string& end, bool up);
    // nullopt clears the link's impairment.
    std::vector<plan::Change> impair(const std::string& end, const std::optional<topology::Impairment>& impairment);
    std::vector<plan::Change> node_power(const std::string& node, NodeAction action);
    // Throws RefusedError unless the running lab of this name runs this topology.
    void require_same_topology() const;
    // True when the lab's journal says it is up.
    bool is_up() const;
    // True when it is up and was built from this topology (the same document, whatever
    // its spacing and key order), not from another file of the same lab name.
    bool runs_this_topology() const;
    // The topology's checks, or every node to every other node's first address.
    // Throws LabError when the lab is not up.
    std::vector<CheckResult> verify(bool all_pairs = false);
    // Echo requests from a node (or node:ifname) to a node, node:ifname or address.
    // `on_reply` sees each reply as it comes. `family` 4 or 6 picks the target's address of
    // that family (0: IPv4 first). Throws UsageError for unknown names, a count outside
    // 1..kMaxPingCount, or a target without an address of the family. A store of true in
    // interrupt_flag() ends it early with the results so far.
    PingOutcome ping(const std::string& from, const std::string& to, int count = 3,
                     std::chrono::milliseconds timeout = std::chrono::milliseconds(1000),
                     std::chrono::milliseconds interval = std::chrono::milliseconds(200),
                     const std::function<void(const ping::Reply&)>& on_reply = {}, int family = 0);
    // Runs argv in the node, output captured, with `env` added to our environment and in
    // `cwd` (ours when empty). Throws UsageError for an unknown node.
    ExecResult exec(const std::string& node, const std::vector<std::string>& argv,
                    const std::optional<std::string>& input = std::nullopt,
                    std::optional<std::chrono::milliseconds> timeout = std::nullopt,
                    const std::map<std::string, std::string>& env = {}, const std::string& cwd = {});
    // Starts argv in the node in the background, as our child (the caller reaps it), its
    // output appended to a log in the lab's state directory. Recorded with the lab's
    // daemons, so `down` stops it. Throws UsageError for an unknown node or a lab not up.
    Background start(const std::string& node, const std::vector<std::string>& argv,
                     const std::map<std::string, std::string>& env = {}, const std::string& cwd = {});
    // Runs argv in the node with our stdin/stdout/stderr; returns its exit code.
    int exec_interactive(const std::string& node, const std::vector<std::string>& argv);
    // Sockets on the requested interfaces, capturing from the moment it returns; run() or
    // capture::Background writes them out. Throws LabError when the lab is not up,
    // capture::RequestError for a name that is not NODE:IFNAME of the lab, an unknown
    // interface or a bad filter (nothing captured), KernelError.
    capture::Capture capture(const CaptureRequest& request) const;
    // The same as `labctl status LAB --json`.
    nlohmann::json status() const;
    // Removes the lab. Returns false when there was nothing to remove.
    bool down();
    // Host limits the lab's checks (or --all-pairs) will meet, each as a sentence that
    // names the host setting to raise. labctl never changes host settings itself.
    std::vector<std::string> host_limit_warnings(bool all_pairs) const;

private:
    const topology::Node& node(const std::string& name) const;
    // The topology file's absolute path, as the journal keeps it ("" from text).
    std::string journal_source() const;
    // One runtime change: `edit` turns the runtime changes in force (read under the lab's
    // lock) into the wanted ones; then plan(file + wanted, the lab with only `touch` read).
    std::vector<plan::Change> change_runtime(const std::function<plan::Runtime(plan::Runtime)>& edit,
                                             const std::vector<detail::Touch>& touch);
    topology::Topology topo_;
    std::string text_;
    std::string folder_;     // the topology file's folder, where node commands run ("" from text)
    bool instance_ = false;  // runs under a name of its own (--name), not the file's
};

// Removes the lab named `name` from its journal: processes, namespaces, state. Idempotent:
// false when there was nothing. Never touches a namespace whose identity differs from the
// recorded one (LabError after removing the rest). Throws LabError/KernelError.
bool down(const std::string& name);
// Every lab with state; down of each. Returns the names removed.
std::vector<std::string> down_all();
// The labs labctl knows of, as `labctl status --json`.
nlohmann::json status_all();
// The name of the lab in FILE, or ARG itself when it is a lab name. Throws TopologyError
// when ARG is neither.
std::string lab_name_of(const std::string& file_or_lab);
// Set (e.g. from a SIGINT/SIGTERM handler: the store is async-signal-safe) to make a
// running `up` stop before its next step and remove what it built.
std::atomic<bool>& interrupt_flag();
// What this kernel can do for labs: every feature labctl may use, tried for real in a
// throw-away namespace. Throws LabError without privileges.
struct KernelFeature {
    std::string name;    // "the netem qdisc"
    std::string config;  // "CONFIG_NET_SCH_NETEM"
    std::string used_for;
    bool present = false;
};
std::vector<KernelFeature> kernel_features();
// Where labs' state lives for this process (LABCTL_STATE_DIR, /run/labctl, or a rootless user's).
std::string state_directory();
// Throws LabError unless we have CAP_NET_ADMIN and CAP_SYS_ADMIN.
void require_privileges();

}  // namespace labctl::engine
