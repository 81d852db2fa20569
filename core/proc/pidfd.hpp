#pragma once
// Internal to proc/: pidfds. glibc 2.36's headers lack <sys/pidfd.h>, so raw syscalls.
// A pidfd names one process for good: signals through it never reach a later process
// that reused the pid, and it polls readable once that process has exited.

#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

namespace labctl::proc::detail {

// -1 with errno (ESRCH: no such process).
inline int pidfd_open(pid_t pid) {
    // pidfds are always close-on-exec.
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

// -1 with errno (ESRCH: the process has exited).
inline int pidfd_send_signal(int pidfd, int sig) {
    return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

}  // namespace labctl::proc::detail
