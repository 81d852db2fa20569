#pragma once
// The semantic half of validation: references, names, addresses, and the resolved model.

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "topology/model.hpp"

namespace labctl::topology {

// A key as one RFC 6901 JSON pointer token ("a/b" -> "a~1b", "~" -> "~0").
std::string pointer_token(const std::string& key);

// Builds the model from a parsed document, appending a problem for every rule broken.
// Values of the wrong JSON type are skipped silently: the schema has reported them.
// The returned model is meaningful only when no problem was added.
Topology build(const nlohmann::ordered_json& doc, const std::string& source, std::vector<TopologyProblem>& problems);

}  // namespace labctl::topology
