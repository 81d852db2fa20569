#pragma once
// Reading and validating a topology. Nothing here touches the host beyond reading the file.

#include <string>

#include "topology/model.hpp"

namespace labctl::topology {

// Files larger than this are refused before parsing (a 2,000-node lab is well under 1 MiB).
inline constexpr std::size_t kMaxFileBytes = 16u << 20;
// Nesting deeper than this is refused before parsing (the format needs 6 levels).
inline constexpr int kMaxDepth = 64;

// Reads, parses and validates FILE. Throws TopologyError listing every problem found
// (unreadable file, syntax error with line and column, schema and semantic errors).
Topology load_file(const std::string& path);

// FILE's text, read once: a regular file (never a FIFO or device: opened non-blocking,
// checked with fstat), at most kMaxFileBytes. Throws TopologyError.
std::string read_topology_file(const std::string& path);

// The same for text already in memory; `source` names it in messages.
// Throws TopologyError.
Topology load_text(const std::string& text, const std::string& source);

// A copy labctl saved itself after load_text accepted it (the state directory's
// topology.json): parsed once and built, not checked against the schema again (the
// semantic checks of building still run). Throws TopologyError.
Topology load_saved_text(const std::string& text, const std::string& source);

// The JSON Schema compiled into the binary (topology-schemas/topology.schema.json).
const char* schema_text();

}  // namespace labctl::topology
