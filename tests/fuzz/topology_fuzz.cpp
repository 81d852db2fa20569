// libFuzzer target: parse + validate a topology (labctl::topology::load_text).
// Build and run: `make fuzz` (tests/fuzz/README.md). Any input must either load or
// throw TopologyError; anything else (a crash, a sanitizer report, another exception,
// a timeout or running out of memory) is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "base/error.hpp"
#include "topology/load.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    try {
        auto topo = labctl::topology::load_text(text, "fuzz.json");
        // Touch the resolved model so a dangling reference in it would show.
        std::size_t n = 0;
        for (const auto& node : topo.nodes) n += node.name.size() + node.interfaces.size();
        for (const auto& link : topo.links) n += topo.end_name(link.ends[0]).size();
        (void)n;
    } catch (const labctl::TopologyError&) {}
    return 0;
}
