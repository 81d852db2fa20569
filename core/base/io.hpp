#pragma once
// Whole-buffer reads and writes on file descriptors, retrying EINTR and short counts.

#include <string>

namespace labctl {

// Writes all of `text`. Throws KernelError with `what` as context.
void write_all(int fd, const std::string& text, const std::string& what);
// Reads until end of file. Throws KernelError with `what` as context.
std::string read_all(int fd, const std::string& what);

}  // namespace labctl
