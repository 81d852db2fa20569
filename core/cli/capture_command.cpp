#include "cli/capture_command.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <iostream>

#include "base/error.hpp"
#include "cli/commands.hpp"
#include "engine/lab.hpp"

namespace labctl::cli {

namespace {

std::atomic<bool> g_stop{false};

// SIGINT/SIGTERM/SIGHUP: stop capturing and finish the file (the store is
// async-signal-safe; no SA_RESTART, so the wait for packets returns at once).
extern "C" void on_capture_signal(int) { g_stop.store(true); }

}  // namespace

CaptureCommand::CaptureCommand(CLI::App& app) {
    command_ =
        app.add_subcommand("capture",
                           "Capture packets on a lab's interfaces (inside their namespaces) into one pcapng file, one "
                           "interface block per NODE:IFNAME");
    command_->add_option("LAB", lab_, "Lab name")->required();
    command_->add_option("INTERFACES", interfaces_, "NODE:IFNAME of each interface to capture on");
    command_->add_flag("--all", all_,
                       "Every interface of every node but lo and bridges (their ports carry the same frames)");
    command_->add_option("-w,--write", output_, "The pcapng file to write; - for stdout (e.g. | wireshark -k -i -)")
        ->required();
    command_->add_option("-c,--count", count_, "Stop after COUNT packets")->check(CLI::PositiveNumber);
    command_->add_option("--duration", duration_s_, "Stop after SECONDS")->check(CLI::Range(0.001, 31536000.0));
    command_->add_option("-f,--filter", filter_, "BPF filter, as tcpdump takes it (e.g. 'icmp or arp')");
    command_->footer(
        "labctl capture LAB NODE:IFNAME [NODE:IFNAME ...] | --all  -w FILE|-\n"
        "               [-c COUNT] [--duration SECONDS] [-f 'BPF FILTER']\n"
        "Stops after COUNT packets, SECONDS, or SIGINT/SIGTERM, and always leaves a complete file.\n"
        "Prints on stderr how many packets were captured and how many the kernel dropped.");
}

int CaptureCommand::run() const {
    if (interfaces_.empty() == !all_) {
        std::cerr << "labctl capture: name the interfaces (NODE:IFNAME ...) or give --all, not both\n";
        return kExitUsage;
    }
    engine::CaptureRequest request;
    request.interfaces = interfaces_;
    request.all = all_;
    request.options.filter = filter_;
    request.options.count = count_;
    if (duration_s_ > 0)
        request.options.duration = std::chrono::milliseconds(static_cast<long long>(duration_s_ * 1000.0 + 0.5));

    struct sigaction sa {};
    sa.sa_handler = on_capture_signal;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);

    std::optional<capture::Capture> cap;
    try {
        // An unknown lab is bad input, like an unknown node or interface: exit 2.
        auto lab = engine::Lab::attach(engine::lab_name_of(lab_));
        cap.emplace(lab.capture(request));
    } catch (const Error& e) {
        // Here every error but the kernel's is about the request (an unknown lab, node or
        // interface, a bad filter): exit 2.
        std::cerr << "labctl capture: " << e.what() << "\n";
        return e.kind() == Error::Kind::kernel ? kExitFailed : kExitUsage;
    }

    try {
        UniqueFd file;
        int out = STDOUT_FILENO;
        if (output_ != "-") {
            file = UniqueFd(::open(output_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
            if (!file) throw_last_errno("creating " + output_);
            out = file.get();
        }
        const auto& targets = cap->targets();
        std::cerr << "labctl capture: listening on " << targets.size() << " interface"
                  << (targets.size() == 1 ? "" : "s") << " of lab " << engine::lab_name_of(lab_);
        if (targets.size() <= 8) {
            std::cerr << ":";
            for (const auto& t : targets) std::cerr << " " << t.label;
        }
        std::cerr << std::endl;
        auto stats = cap->run(out, g_stop);
        if (file && ::close(file.release()) != 0) throw_last_errno("closing " + output_);
        std::cerr << stats.captured() << " packet" << (stats.captured() == 1 ? "" : "s") << " captured\n"
                  << stats.received() << " packet" << (stats.received() == 1 ? "" : "s") << " received by filter\n"
                  << stats.kernel_drops() << " packet" << (stats.kernel_drops() == 1 ? "" : "s")
                  << " dropped by kernel\n";
        if (stats.out_of_order)
            std::cerr << stats.out_of_order << " packet" << (stats.out_of_order == 1 ? "" : "s")
                      << " written out of time order (they reached labctl late: a busy CPU)\n";
        return kExitOk;
    } catch (const std::exception& e) {
        std::cerr << "labctl capture: " << e.what() << "\n";
        return kExitFailed;
    }
}

}  // namespace labctl::cli
