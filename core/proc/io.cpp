// Pipes and exit statuses, shared by single (run.cpp) and batched (batch.cpp) runs.

#include "proc/io.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "base/error.hpp"

namespace labctl::proc::detail {

UniqueFd above_stdio(UniqueFd fd, const std::string& what) {
    if (fd.get() > 2) return fd;
    UniqueFd moved(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3));
    if (!moved) throw_last_errno(what + ": duplicating a descriptor");
    return moved;
}

void make_pipe(UniqueFd& read_end, UniqueFd& write_end, const std::string& what) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) < 0) throw_last_errno(what + ": creating a pipe");
    read_end = above_stdio(UniqueFd(fds[0]), what);
    write_end = above_stdio(UniqueFd(fds[1]), what);
}

UniqueFd open_dev_null(int flags, const std::string& what) {
    UniqueFd fd(::open("/dev/null", flags | O_CLOEXEC | O_NOCTTY));
    if (!fd) throw_last_errno(what + ": opening /dev/null");
    return above_stdio(std::move(fd), what);
}

void set_nonblocking(int fd, const std::string& what) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) throw_last_errno(what + ": setting O_NONBLOCK");
}

int wait_status(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return -1;
    }
    return status;
}

void drain(UniqueFd& fd, std::string& into) {
    char buf[65536];
    while (fd) {
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n > 0) {
            into.append(buf, static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n == 0 || errno != EAGAIN) fd.reset();
        return;
    }
}

int decode(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return -WTERMSIG(status);
    return -1;
}

}  // namespace labctl::proc::detail
