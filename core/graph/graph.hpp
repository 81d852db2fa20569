#pragma once
// A Graphviz picture of a lab: node shape by kind, links labelled with interface names and
// addresses, TAP/TUN endpoints drawn as their own small shapes.

#include <string>

#include "topology/model.hpp"

namespace labctl::graph {

// The DOT text of the lab. Deterministic: the same topology gives the same text.
std::string to_dot(const topology::Topology& topo);

// Writes the picture to `path`: DOT as is for ".dot", else rendered by Graphviz's `dot`
// ("svg" or "png", from the extension, in any case). Throws UsageError when the extension
// is unknown, KernelError when the file (opened first, for every format) or the process
// cannot be made, LabError when `dot` fails.
void render(const topology::Topology& topo, const std::string& path);

}  // namespace labctl::graph
