#include "base/io.hpp"

#include <unistd.h>

#include <cerrno>

#include "base/error.hpp"

namespace labctl {

void write_all(int fd, const std::string& text, const std::string& what) {
    std::size_t done = 0;
    while (done < text.size()) {
        ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_last_errno(what);
        done += static_cast<std::size_t>(n);
    }
}

std::string read_all(int fd, const std::string& what) {
    std::string text;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_last_errno(what);
        if (n == 0) break;
        text.append(buf, static_cast<std::size_t>(n));
    }
    return text;
}

}  // namespace labctl
