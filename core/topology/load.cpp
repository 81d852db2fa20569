// Reading, parsing and structural (schema) validation. Semantic rules are in build.cpp.

#include "topology/load.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <iterator>
#include <optional>
#include <nlohmann/json.hpp>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validator.hpp>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "topology/build.hpp"

namespace labctl::topology {

extern const char* const kSchemaText;  // generated from topology-schemas/

const char* schema_text() { return kSchemaText; }

namespace {

[[noreturn]] void fail(const std::string& source, std::string pointer, std::string message) {
    throw TopologyError(source, {{std::move(pointer), std::move(message)}});
}

std::string position(const std::string& text, std::size_t offset) {
    offset = std::min(offset, text.size());
    std::size_t line = 1, column = 1;
    for (std::size_t i = 0; i < offset; ++i) {
        if (text[i] == '\n') {
            ++line;
            column = 1;
        } else {
            ++column;
        }
    }
    return "line " + std::to_string(line) + ", column " + std::to_string(column);
}

// nlohmann's parser keeps its own stack, but deep documents still cost memory and a
// recursive destructor; refuse them before parsing.
void check_depth(const std::string& text, const std::string& source) {
    int depth = 0;
    bool in_string = false, escaped = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
            continue;
        }
        if (c == '"') in_string = true;
        else if (c == '[' || c == '{') {
            if (++depth > kMaxDepth)
                fail(source, "",
                     position(text, i) + ": nested deeper than " + std::to_string(kMaxDepth) +
                         " levels; a topology needs far fewer");
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
}

// The offset of the first occurrence of `token` outside JSON strings that is a whole
// token (not part of a longer number or word), or nullopt.
std::optional<std::size_t> find_token(const std::string& text, const std::string& token) {
    auto word_char = [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '+';
    };
    bool in_string = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\') ++i;
            else if (c == '"') in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
            continue;
        }
        if (!token.empty() && text.compare(i, token.size(), token) == 0 && (i == 0 || !word_char(text[i - 1])) &&
            (i + token.size() == text.size() || !word_char(text[i + token.size()])))
            return i;
    }
    return std::nullopt;
}

// Parses with nlohmann, reporting syntax errors with line and column.
template <typename Json>
Json parse_json(const std::string& text, const std::string& source) {
    try {
        return Json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
        std::string what = e.what();
        // nlohmann: "[json.exception.parse_error.101] parse error at line 1, column 2: syntax error ..."
        auto colon = what.find(": ", what.find("parse error"));
        std::string detail = colon == std::string::npos ? what : what.substr(colon + 2);
        std::size_t offset = e.byte == 0 ? 0 : e.byte - 1;
        fail(source, "", position(text, offset) + ": invalid JSON: " + detail);
    } catch (const nlohmann::json::exception& e) {
        // E.g. "[json.exception.out_of_range.406] number overflow parsing '1e999'" (a
        // number no double holds): no offset given, so the number is looked up.
        std::string what = e.what();
        if (auto end = what.find("] "); what.starts_with("[json.exception.") && end != std::string::npos)
            what = what.substr(end + 2);
        std::optional<std::size_t> offset;
        if (auto open = what.find('\''), close = what.rfind('\''); open != std::string::npos && close > open)
            offset = find_token(text, what.substr(open + 1, close - open - 1));
        fail(source, "", (offset ? position(text, *offset) + ": " : std::string()) + "invalid JSON: " + what);
    }
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

// The part of the schema that describes the value at `tokens`, or null.
const nlohmann::json* schema_at(const nlohmann::json& root, const std::vector<std::string>& tokens) {
    auto deref = [&](const nlohmann::json* node) -> const nlohmann::json* {
        for (int guard = 0; node && node->is_object() && node->contains("$ref") && guard < 8; ++guard) {
            std::string ref = (*node)["$ref"].get<std::string>();
            if (ref.rfind("#/definitions/", 0) != 0) return nullptr;
            auto& defs = root["definitions"];
            auto it = defs.find(ref.substr(14));
            node = it == defs.end() ? nullptr : &*it;
        }
        return node;
    };
    const nlohmann::json* node = deref(&root);
    for (const auto& t : tokens) {
        if (!node || !node->is_object()) return nullptr;
        if (auto p = node->find("properties"); p != node->end() && p->contains(t)) node = &(*p)[t];
        else if (auto a = node->find("additionalProperties"); a != node->end() && a->is_object()) node = &*a;
        else if (auto i = node->find("items"); i != node->end() && i->is_object()) node = &*i;
        else return nullptr;
        node = deref(node);
    }
    return node;
}

std::string json_type_name(const nlohmann::json& v) {
    if (v.is_null()) return "null";
    if (v.is_boolean()) return "a boolean";
    if (v.is_number_integer() || v.is_number_unsigned()) return "an integer";
    if (v.is_number()) return "a number";
    if (v.is_string()) return "a string";
    if (v.is_array()) return "an array";
    return "an object";
}

std::string schema_type_name(const nlohmann::json& root, const nlohmann::json* node) {
    if (!node) return "another type";
    auto name = [](const std::string& t) {
        if (t == "object") return std::string("an object");
        if (t == "array") return std::string("an array");
        if (t == "integer") return std::string("an integer");
        return "a " + t;
    };
    if (auto t = node->find("type"); t != node->end() && t->is_string()) return name(t->get<std::string>());
    if (auto one = node->find("oneOf"); one != node->end()) {
        std::string text;
        for (const auto& alt : *one) {
            const nlohmann::json* a = &alt;
            if (alt.contains("$ref")) {
                std::string ref = alt["$ref"].get<std::string>();
                auto& defs = root["definitions"];
                a = defs.contains(ref.substr(14)) ? &defs[ref.substr(14)] : nullptr;
            }
            std::string t = schema_type_name(root, a);
            text += (text.empty() ? "" : " or ") + t;
        }
        return text;
    }
    if (node->contains("enum")) return "one of the listed values";
    return "another type";
}

// Says a schema failure the way the rest of labctl does, using the schema itself for
// the rule (pattern, enum values, bounds) and the document for the offending value.
std::string friendly(const nlohmann::json& root, const std::string& message, const nlohmann::json* rule,
                     const nlohmann::json* value) {
    std::string shown = value ? value->dump() : "the value";
    if (shown.size() > 60) shown = shown.substr(0, 57) + "...";
    if (starts_with(message, "Failed to match regex") && rule && rule->contains("pattern"))
        return shown + " does not match " + (*rule)["pattern"].get<std::string>();
    if (starts_with(message, "Failed to match against any enum values") && rule && rule->contains("enum")) {
        std::string list;
        for (const auto& v : (*rule)["enum"]) list += (list.empty() ? "" : ", ") + v.dump();
        return shown + " is not one of " + list;
    }
    if (starts_with(message, "Value type not permitted"))
        return "expected " + schema_type_name(root, rule) + ", found " +
            (value ? json_type_name(*value) : "another type");
    if (starts_with(message, "Missing required property '")) {
        std::string key = message.substr(27);
        return "missing required field \"" + key.substr(0, key.find('\'')) + "\"";
    }
    if (rule && (starts_with(message, "Expected number") || message.find("than") != std::string::npos)) {
        std::string bounds;
        for (const char* k : {"minimum", "exclusiveMinimum", "maximum", "minLength", "maxLength", "minItems",
                              "maxItems", "minProperties"})
            if (rule->contains(k)) bounds += std::string(bounds.empty() ? "" : ", ") + k + " " + (*rule)[k].dump();
        if (!bounds.empty()) return shown + " is out of bounds (" + bounds + ")";
    }
    return message;
}

// valijson's "Failed to validate ..." repeats, at every level above, a failure reported
// below; some (propertyNames) carry no detail at all and are said again by build().
bool is_generic(const TopologyProblem& p) { return starts_with(p.message, "Failed to "); }

std::vector<std::string> pointer_tokens(const std::vector<std::string>& context) {
    std::vector<std::string> tokens;
    for (const auto& part : context)
        if (part.size() >= 2 && part.front() == '[' && part.back() == ']')
            tokens.push_back(part.substr(1, part.size() - 2));
    return tokens;
}

// valijson reports a failure at every level above the one that failed; keep the
// most specific message for each place.
std::vector<TopologyProblem> schema_problems(const nlohmann::json& doc) {
    static const nlohmann::json& schema_doc = *new nlohmann::json(nlohmann::json::parse(kSchemaText));
    // Parsed once per process; valijson's Schema is neither copyable nor movable.
    static const valijson::Schema& schema = *[] {
        auto* s = new valijson::Schema;
        valijson::SchemaParser parser;
        valijson::adapters::NlohmannJsonAdapter adapter(schema_doc);
        parser.populateSchema(adapter, *s);
        return s;
    }();
    valijson::Validator validator;
    valijson::ValidationResults results;
    valijson::adapters::NlohmannJsonAdapter target(doc);
    if (validator.validate(schema, target, &results)) return {};

    std::vector<TopologyProblem> raw;
    valijson::ValidationResults::Error error;
    while (results.popError(error)) {
        std::vector<std::string> tokens = pointer_tokens(error.context);
        std::string message = error.description;
        const std::string unknown =
            "Object contains a property that could not be validated using "
            "'properties' or 'additionalProperties' constraints: '";
        if (starts_with(message, unknown)) {
            std::string key = message.substr(unknown.size());
            key = key.substr(0, key.rfind("'."));
            tokens.push_back(key);
            message = "unknown field \"" + key + "\"";
        } else {
            const nlohmann::json* value = &doc;
            for (const auto& t : tokens) {
                if (value->is_object() && value->contains(t)) value = &(*value)[t];
                else if (value->is_array() && !t.empty() && t.find_first_not_of("0123456789") == std::string::npos &&
                         std::stoul(t) < value->size())
                    value = &(*value)[std::stoul(t)];
                else {
                    value = nullptr;
                    break;
                }
            }
            message = friendly(schema_doc, message, schema_at(schema_doc, tokens), value);
        }
        std::string pointer;
        for (const auto& t : tokens) pointer += "/" + pointer_token(t);
        raw.push_back({pointer, message});
    }

    // A type mismatch at a place that has a more specific complaint is an alternative of a
    // oneOf that did not apply ("expected a string" next to "array too short").
    std::vector<TopologyProblem> kept;
    for (const auto& p : raw) {
        bool superseded =
            starts_with(p.message, "expected ") && std::any_of(raw.begin(), raw.end(), [&](const TopologyProblem& q) {
                return q.pointer == p.pointer && !starts_with(q.message, "expected ") && !is_generic(q);
            });
        bool duplicate = std::any_of(kept.begin(), kept.end(), [&](const TopologyProblem& k) {
            return k.pointer == p.pointer && k.message == p.message;
        });
        if (!superseded && !duplicate) kept.push_back(p);
    }
    return kept;
}

std::string read_file(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    if (!fd) fail(path, "", "cannot read: " + describe_errno(errno));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) fail(path, "", "cannot read: " + describe_errno(errno));
    if (S_ISDIR(st.st_mode)) fail(path, "", "is a directory, not a topology file");
    if (!S_ISREG(st.st_mode)) fail(path, "", "is not a regular file");
    if (static_cast<std::size_t>(st.st_size) > kMaxFileBytes)
        fail(path, "",
             "is " + std::to_string(st.st_size) + " bytes; topology files are limited to " +
                 std::to_string(kMaxFileBytes >> 20) + " MiB");
    std::string text;
    text.resize(static_cast<std::size_t>(st.st_size));
    std::size_t done = 0;
    while (done < text.size()) {
        ssize_t n = ::read(fd.get(), text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail(path, "", "cannot read: " + describe_errno(errno));
        if (n == 0) break;
        done += static_cast<std::size_t>(n);
    }
    text.resize(done);
    return text;
}

}  // namespace

Topology load_text(const std::string& text, const std::string& source) {
    if (text.size() > kMaxFileBytes)
        fail(source, "", "topologies are limited to " + std::to_string(kMaxFileBytes >> 20) + " MiB");
    if (text.find('\0') != std::string::npos) {
        fail(source, "", position(text, text.find('\0')) + ": invalid JSON: NUL byte (binary file?)");
    }
    check_depth(text, source);
    // Two parses: valijson reads nlohmann::json (keys sorted); the model is built from
    // ordered_json, because "first address in file order" depends on key order.
    auto ordered = parse_json<nlohmann::ordered_json>(text, source);
    auto sorted = parse_json<nlohmann::json>(text, source);
    std::vector<TopologyProblem> problems = schema_problems(sorted);
    Topology topo = build(ordered, source, problems);
    std::vector<TopologyProblem> specific;
    std::copy_if(problems.begin(), problems.end(), std::back_inserter(specific),
                 [](const TopologyProblem& p) { return !is_generic(p); });
    if (!specific.empty()) throw TopologyError(source, std::move(specific));
    if (!problems.empty()) throw TopologyError(source, {problems.front()});
    return topo;
}

Topology load_saved_text(const std::string& text, const std::string& source) {
    if (text.size() > kMaxFileBytes)
        fail(source, "", "topologies are limited to " + std::to_string(kMaxFileBytes >> 20) + " MiB");
    check_depth(text, source);
    auto ordered = parse_json<nlohmann::ordered_json>(text, source);
    std::vector<TopologyProblem> problems;
    Topology topo = build(ordered, source, problems);
    if (!problems.empty()) throw TopologyError(source, std::move(problems));
    return topo;
}

std::string read_topology_file(const std::string& path) { return read_file(path); }

Topology load_file(const std::string& path) { return load_text(read_file(path), path); }

}  // namespace labctl::topology
