#pragma once
// Error types shared by every module. Library code throws; only cli/ prints.
//
// Every error labctl throws on purpose is a labctl::Error of one of three kinds:
//   TopologyError  bad input, every problem with its JSON pointer; nothing was touched
//   KernelError    a kernel call failed, with its errno and the kernel's own message
//   LabError       the operation failed or was refused (UsageError: bad input found past
//                  the topology, e.g. an unknown node)
// The CLI and the Python bindings catch labctl::Error once and look at kind().
//
// Messages follow one shape: "<object>: <operation>: <strerror> (<ERRNO>)[: <kernel's words>]",
// e.g. "r1: adding 10.0.1.1/24 to eth1: File exists (EEXIST)". They name things
// (interfaces, namespaces), not ifindexes or fds.

#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace labctl {

// "EEXIST" for EEXIST; "E<n>" for numbers glibc does not name.
std::string errno_name(int err);

// "File exists (EEXIST)".
std::string describe_errno(int err);

// The base of labctl's errors. what() is the full message.
class Error : public std::runtime_error {
public:
    enum class Kind { topology, kernel, lab };
    Kind kind() const noexcept { return kind_; }
    // The errno behind it; 0 when there is none.
    int errno_value() const noexcept { return errno_; }
    // Bad input: nothing was touched (the CLI exits 2). True for every TopologyError.
    virtual bool is_usage() const noexcept { return kind_ == Kind::topology; }

protected:
    Error(Kind kind, const std::string& message, int err) : std::runtime_error(message), kind_(kind), errno_(err) {}

private:
    Kind kind_;
    int errno_;
};

// A failed kernel call. errno_value() keeps the errno; what() is the full sentence.
class KernelError : public Error {
public:
    KernelError(int err, const std::string& context, const std::string& kernel_message = {});
    const std::string& kernel_message() const noexcept { return kernel_message_; }
    const std::string& context() const noexcept { return context_; }
    // A copy with "<prefix>: " put in front of the context.
    KernelError prefixed(const std::string& prefix) const;

private:
    std::string context_;
    std::string kernel_message_;
};

// Throws KernelError for errno `err`. Never returns.
[[noreturn]] void throw_errno(int err, const std::string& context);
// Throws KernelError for the current errno.
[[noreturn]] void throw_last_errno(const std::string& context);

// Invalid topology: every problem, each with its JSON pointer.
struct TopologyProblem {
    std::string pointer;  // RFC 6901, "" for the whole document
    std::string message;
};

class TopologyError : public Error {
public:
    TopologyError(std::string file, std::vector<TopologyProblem> problems);
    const std::string& file() const noexcept { return file_; }
    const std::vector<TopologyProblem>& problems() const noexcept { return problems_; }

private:
    std::string file_;
    std::vector<TopologyProblem> problems_;
};

// An operation on a lab failed for a reason other than bad input or a kernel errno
// (a lab already up, a missing privilege, a missing kernel feature...).
class LabError : public Error {
public:
    explicit LabError(const std::string& message, int err = 0) : Error(Kind::lab, message, err) {}
};

// Bad input found past the topology: an unknown lab, node or interface, a count out of
// range, a missing file. Nothing was touched; the CLI exits 2 (usage) for it.
class UsageError : public LabError {
public:
    using LabError::LabError;
    bool is_usage() const noexcept override { return true; }
};

}  // namespace labctl
