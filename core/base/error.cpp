#include "base/error.hpp"

#include <cerrno>
#include <cstring>

namespace labctl {

std::string errno_name(int err) {
    if (const char* name = ::strerrorname_np(err)) return name;
    return "E" + std::to_string(err);
}

std::string describe_errno(int err) { return std::string(::strerror(err)) + " (" + errno_name(err) + ")"; }

namespace {
std::string compose(int err, const std::string& context, const std::string& kernel_message) {
    std::string text = context.empty() ? describe_errno(err) : context + ": " + describe_errno(err);
    if (!kernel_message.empty()) text += ": " + kernel_message;
    return text;
}
}  // namespace

KernelError::KernelError(int err, const std::string& context, const std::string& kernel_message)
    : Error(Kind::kernel, compose(err, context, kernel_message), err),
      context_(context),
      kernel_message_(kernel_message) {}

KernelError KernelError::prefixed(const std::string& prefix) const {
    return KernelError(errno_value(), context_.empty() ? prefix : prefix + ": " + context_, kernel_message_);
}

void throw_errno(int err, const std::string& context) { throw KernelError(err, context); }

void throw_last_errno(const std::string& context) { throw_errno(errno, context); }

namespace {
std::string summarize(const std::string& file, const std::vector<TopologyProblem>& problems) {
    std::string text;
    for (const auto& p : problems) {
        if (!text.empty()) text += '\n';
        text += file + ": " + (p.pointer.empty() ? "" : p.pointer + ": ") + p.message;
    }
    return text;
}
}  // namespace

TopologyError::TopologyError(std::string file, std::vector<TopologyProblem> problems)
    : Error(Kind::topology, summarize(file, problems), 0), file_(std::move(file)), problems_(std::move(problems)) {}

}  // namespace labctl
