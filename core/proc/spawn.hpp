#pragma once
// Internal to proc/: starting a child inside a network namespace.

#include <sys/types.h>

#include <cstddef>
#include <string>

#include "proc/proc.hpp"

namespace labctl::proc::detail {

enum class Mode {
    captured,     // own process group, so a timeout can kill everything it started
    interactive,  // stays in our process group: the terminal's foreground job
    daemon,       // fork, fork, fork + setsid: adopted by init, never our child; a supervisor
                  // (the daemon's parent) records how it ended
};

// Descriptors to put on the child's 0, 1, 2; -1 leaves ours.
struct Stdio {
    int in = -1;
    int out = -1;
    int err = -1;
    // Mode::daemon: where the daemon's supervisor writes its wait status when it ends.
    int exit_status = -1;
};

struct Spawned {
    pid_t pid = -1;      // our direct child (for a daemon: the intermediate, already reaped)
    ProcessId daemon{};  // Mode::daemon only
};

// Starts `command` and returns once it has exec'd. Throws KernelError naming the
// command (label or netns, argv[0]) and the step that failed; LabError for an empty argv.
Spawned spawn(const Command& command, Mode mode, const Stdio& stdio);

// "h1: running \"foo\"", the context of every error about the command.
std::string describe(const Command& command);

// Parses a /proc/<pid>/stat text. Allocation-free and async-signal-safe: it also runs
// in a forked child. False when the text is malformed.
bool parse_stat(const char* text, std::size_t len, char* state, unsigned long long* start_time);

}  // namespace labctl::proc::detail
