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

struct DotOptions {
    // Gives nodes the id "node-NAME" and links "link-I" (I: the link's index in the file),
    // which Graphviz keeps in SVG output: `labctl serve` finds the elements by them.
    bool element_ids = false;
};
// to_dot with options.
std::string to_dot(const topology::Topology& topo, const DotOptions& options);

// The picture as SVG text, made by Graphviz's dot. Throws LabError when dot fails,
// KernelError when it cannot be run.
std::string to_svg(const topology::Topology& topo, const DotOptions& options = {});

}  // namespace labctl::graph
