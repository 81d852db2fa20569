#pragma once
// Internal to netns/: what its two files share. netns.cpp names, creates, inspects and
// removes namespaces; run.cpp runs code inside one (run_on_thread_in, run_in_each,
// NetnsWorker).

#include <string>

namespace labctl::netns::detail {

// `namespace "NAME"`, how every message names a namespace.
std::string what(const std::string& name);

}  // namespace labctl::netns::detail
