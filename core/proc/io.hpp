#pragma once
// Internal to proc/: pipes, /dev/null and exit statuses around a child.

#include <sys/types.h>

#include <string>

#include "base/unique_fd.hpp"

namespace labctl::proc::detail {

// Our ends must not land on 0-2: the child dup2()s them there (see spawn()).
UniqueFd above_stdio(UniqueFd fd, const std::string& what);
// A close-on-exec pipe, both ends above 2. Throws KernelError.
void make_pipe(UniqueFd& read_end, UniqueFd& write_end, const std::string& what);
UniqueFd open_dev_null(int flags, const std::string& what);
void set_nonblocking(int fd, const std::string& what);
// The wait status, or -1 with errno (ECHILD when someone else reaped it, e.g. a
// process that set SIGCHLD to SIG_IGN).
int wait_status(pid_t pid);
// Reads until the pipe is empty (or at EOF, then closes it).
void drain(UniqueFd& fd, std::string& into);
// An exit code, or -signal (like Python's subprocess).
int decode(int status);

}  // namespace labctl::proc::detail
