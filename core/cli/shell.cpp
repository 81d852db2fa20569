#include "cli/shell.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "engine/lab.hpp"
#include "topology/load.hpp"

namespace labctl::cli {

namespace {

// A line that tells the shell script to add file names to the candidates. No candidate can
// look like it: lab and node names start with a letter, option names with '-'.
constexpr const char* kFilesMarker = ":files";

bool visible(const CLI::App* s) { return !s->get_group().empty(); }
bool visible(const CLI::Option* o) { return !o->get_group().empty(); }

std::vector<const CLI::App*> subcommands(const CLI::App& app) {
    return app.get_subcommands([](const CLI::App* s) { return visible(s); });
}

std::vector<const CLI::Option*> positionals(const CLI::App& sub) {
    return sub.get_options([](const CLI::Option* o) { return visible(o) && o->get_positional(); });
}

std::vector<const CLI::Option*> named_options(const CLI::App& sub) {
    return sub.get_options(
        [](const CLI::Option* o) { return visible(o) && (!o->get_lnames().empty() || !o->get_snames().empty()); });
}

std::vector<std::string> option_spellings(const CLI::Option& o) {
    std::vector<std::string> out;
    for (const auto& s : o.get_snames()) out.push_back("-" + s);
    for (const auto& l : o.get_lnames()) out.push_back("--" + l);
    return out;
}

bool takes_value(const CLI::Option& o) { return o.get_items_expected_max() > 0; }  // flags expect 0

// The word that stands for an option's value in synopses: --count COUNT.
std::string value_name(const CLI::Option& o) {
    std::string n = o.get_lnames().empty() ? o.get_snames().front() : o.get_lnames().front();
    std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return c == '-' ? '_' : std::toupper(c); });
    return n;
}

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// ---- completion -----------------------------------------------------------------------

std::vector<std::string> running_labs() {
    std::vector<std::string> out;
    try {
        for (const auto& l : engine::status_all())
            if (l.value("state", "") == "up") out.push_back(l.value("name", ""));
    } catch (const std::exception&) {
        // No state directory, or not ours to read: nothing to offer.
    }
    return out;
}

// The nodes of the lab that ARG names: a topology file or a running lab.
std::vector<std::string> nodes_of(const std::string& arg) {
    std::vector<std::string> out;
    try {
        struct stat st {};
        topology::Topology topo = ::stat(arg.c_str(), &st) == 0 && S_ISREG(st.st_mode)
            ? topology::load_file(arg)
            : engine::Lab::attach(arg).topology();
        for (const auto& n : topo.nodes) out.push_back(n.name);
    } catch (const std::exception&) {}
    return out;
}

// What a value named NAME can be, by its name: LAB and TARGET name labs, FILE and TARGET
// files, NODE, FROM and TO nodes of the lab named before. New subcommands get completion
// by naming their positionals this way.
void candidates_for(const std::string& name, const std::string& lab, std::vector<std::string>& out, bool& files) {
    if (contains(name, "LAB") || contains(name, "TARGET")) {
        auto labs = running_labs();
        out.insert(out.end(), labs.begin(), labs.end());
    }
    if (contains(name, "FILE") || contains(name, "TARGET") || name == "OUTPUT" || name == "COMMAND") files = true;
    if ((contains(name, "NODE") || name == "FROM" || name == "TO") && !lab.empty()) {
        auto nodes = nodes_of(lab);
        out.insert(out.end(), nodes.begin(), nodes.end());
    }
    if (name == "SHELL") out.insert(out.end(), {"bash", "zsh", "fish"});
}

// WORDS: the words after `labctl`, the last one the word being completed (maybe empty).
int complete(const CLI::App& app, std::vector<std::string> words) {
    if (words.empty()) words.emplace_back();
    const std::string cur = words.back();
    words.pop_back();
    std::vector<std::string> out;
    bool files = false;

    auto emit = [&] {
        std::set<std::string> seen;
        for (const auto& c : out)
            if (c.compare(0, cur.size(), cur) == 0 && seen.insert(c).second) std::cout << c << "\n";
        if (files) std::cout << kFilesMarker << "\n";
        return 0;
    };

    if (words.empty()) {  // the subcommand itself
        if (!cur.empty() && cur[0] == '-') {
            out = {"--help", "--version"};
        } else {
            for (const auto* s : subcommands(app)) out.push_back(s->get_name());
        }
        return emit();
    }
    const CLI::App* sub = nullptr;
    for (const auto* s : subcommands(app))
        if (s->get_name() == words[0]) sub = s;
    if (!sub) return emit();

    auto pos = positionals(*sub);
    auto opts = named_options(*sub);
    auto find_option = [&](const std::string& w) -> const CLI::Option* {
        for (const auto* o : opts)
            for (const auto& sp : option_spellings(*o))
                if (sp == w) return o;
        return nullptr;
    };

    // Walk the words before the cursor: positionals filled, an option waiting for its value.
    std::vector<std::string> values;  // positional values, in order
    const CLI::Option* pending = nullptr;
    bool only_positionals = false;
    for (std::size_t i = 1; i < words.size(); ++i) {
        const std::string& w = words[i];
        if (pending) {
            pending = nullptr;
        } else if (!only_positionals && w == "--") {
            only_positionals = true;
        } else if (!only_positionals && w.size() > 1 && w[0] == '-') {
            auto eq = w.find('=');
            const auto* o = find_option(w.substr(0, eq));
            if (o && takes_value(*o) && eq == std::string::npos) pending = o;
        } else {
            values.push_back(w);
        }
    }
    // The lab the values name: the first positional called LAB or TARGET.
    std::string lab;
    for (std::size_t i = 0; i < pos.size() && i < values.size(); ++i) {
        std::string n = pos[i]->get_name(true);
        if (contains(n, "LAB") || contains(n, "TARGET")) {
            lab = values[i];
            break;
        }
    }

    if (pending) {
        candidates_for(value_name(*pending), lab, out, files);
        if (pending->get_type_name() == "TEXT") files = true;
        return emit();
    }
    if (!only_positionals && !cur.empty() && cur[0] == '-') {
        for (const auto* o : opts)
            for (const auto& sp : option_spellings(*o)) out.push_back(sp);
        return emit();
    }
    // The positional the cursor is on: a trailing list (COMMAND...) takes every later word.
    const CLI::Option* at = nullptr;
    std::size_t index = 0;
    for (const auto* p : pos) {
        std::size_t takes = p->get_items_expected_max() > 1 ? values.size() + 1 : 1;
        if (values.size() < index + takes) {
            at = p;
            break;
        }
        index += takes;
    }
    if (at) candidates_for(at->get_name(true), lab, out, files);
    return emit();
}

// ---- completion scripts -----------------------------------------------------------------
// Each asks `labctl __complete` (the command being completed, so ./build/labctl works too)
// and adds file names when it answers ":files".

constexpr const char* kBash = R"(# bash completion for labctl (labctl completion bash)
_labctl() {
    local cur=${COMP_WORDS[COMP_CWORD]} line files=0
    local -a cands=()
    while IFS= read -r line; do
        if [[ $line == ":files" ]]; then files=1; else cands+=("$line"); fi
    done < <("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)
    COMPREPLY=("${cands[@]}")
    if (( files )); then
        compopt -o filenames 2>/dev/null
        while IFS= read -r line; do COMPREPLY+=("$line"); done < <(compgen -f -- "$cur")
    fi
}
complete -F _labctl labctl
)";

constexpr const char* kZsh = R"(#compdef labctl
# zsh completion for labctl (labctl completion zsh)
_labctl() {
    local line
    local -a cands
    local files=0
    for line in "${(@f)$(${words[1]} __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}"; do
        [[ -z $line ]] && continue
        if [[ $line == :files ]]; then files=1; else cands+=("$line"); fi
    done
    (( ${#cands} )) && compadd -- "${cands[@]}"
    (( files )) && _files
    return 0
}
if [[ ${funcstack[1]} == _labctl ]]; then
    _labctl "$@"
else
    compdef _labctl labctl
fi
)";

constexpr const char* kFish = R"(# fish completion for labctl (labctl completion fish)
function __labctl_complete
    set -l words (commandline -opc)
    set -l cur (commandline -ct)
    for line in ($words[1] __complete $words[2..-1] "$cur" 2>/dev/null)
        if test "$line" = ":files"
            __fish_complete_path "$cur"
        else
            echo $line
        end
    end
end
complete -c labctl -f -a '(__labctl_complete)'
)";

// ---- man page ---------------------------------------------------------------------------

// Text for roff: backslashes and hyphens escaped, no line may start with a control character.
std::string roff(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '\\') out += "\\e";
        else if (c == '-') out += "\\-";
        else out += c;
    }
    if (!out.empty() && (out[0] == '.' || out[0] == '\'')) out.insert(0, "\\&");
    return out;
}

std::string synopsis(const CLI::App& sub) {
    std::string s = "\\fBlabctl " + roff(sub.get_name()) + "\\fR";
    for (const auto* p : positionals(sub)) {
        std::string item = "\\fI" + roff(p->get_name(true)) + "\\fR";
        if (p->get_items_expected_max() > 1) item = (sub.get_prefix_command() ? "" : "\\fB\\-\\-\\fR ") + item + "...";
        s += p->get_required() ? " " + item : " [" + item + "]";
    }
    for (const auto* o : named_options(sub)) {
        if (o == sub.get_help_ptr()) continue;
        // The short spelling when there is one, as usage lines do: [-c COUNT].
        std::string name = o->get_snames().empty() ? "--" + o->get_lnames().front() : "-" + o->get_snames().front();
        std::string item = "\\fB" + roff(name) + "\\fR";
        if (takes_value(*o)) item += " \\fI" + value_name(*o) + "\\fR";
        s += o->get_required() ? " " + item : " [" + item + "]";
    }
    return s;
}

int man(const CLI::App& app) {
    std::ostream& o = std::cout;
    o << ".\\\" labctl(1), generated by `labctl __man` from the command line's own definitions.\n"
      << ".TH LABCTL 1 \"\" \"labctl " << roff(LABCTL_VERSION) << "\" \"User Commands\"\n"
      << ".SH NAME\nlabctl \\- " << roff("virtual network labs from a JSON topology") << "\n"
      << ".SH SYNOPSIS\n";
    for (const auto* s : subcommands(app)) o << synopsis(*s) << "\n.br\n";
    o << "\\fBlabctl\\fR \\fB\\-\\-version\\fR | \\fB\\-\\-help\\fR | \\fISUBCOMMAND\\fR \\fB\\-\\-help\\fR\n"
      << ".SH DESCRIPTION\n"
      << "labctl builds virtual network labs described by a JSON topology file: one network namespace\n"
         "per node, veth links, bridges, TUN/TAP interfaces, addresses and routes, all made through\n"
         "netlink by labctl itself. It then runs the topology's reachability checks with its own ICMP\n"
         "pinger, and later takes everything down again. Only the lab's own namespaces and labctl's\n"
         "state directory are touched.\n"
      << ".PP\nThe topology format and the Python API are described in\n"
         ".I /usr/share/doc/labctl\nand the project's docs; example labs are in\n.IR /usr/share/labctl/labs .\n"
      << ".SH COMMANDS\n";
    for (const auto* s : subcommands(app)) {
        o << ".SS \"" << roff(s->get_name()) << "\"\n"
          << synopsis(*s) << "\n.PP\n"
          << roff(s->get_description()) << "\n";
        for (const auto* p : positionals(*s))
            o << ".TP\n.I " << roff(p->get_name(true)) << "\n" << roff(p->get_description()) << "\n";
        for (const auto* op : named_options(*s)) {
            if (op == s->get_help_ptr()) continue;
            std::string names;
            for (const auto& sp : option_spellings(*op))
                names += (names.empty() ? "" : ", ") + ("\\fB" + roff(sp) + "\\fR");
            if (takes_value(*op)) names += " \\fI" + value_name(*op) + "\\fR";
            o << ".TP\n" << names << "\n" << roff(op->get_description()) << "\n";
        }
    }
    o << ".SH OPTIONS\n.TP\n\\fB\\-h\\fR, \\fB\\-\\-help\\fR\nPrint help (also after a subcommand) and exit.\n"
      << ".TP\n\\fB\\-\\-version\\fR\nPrint the version and exit.\n"
      << ".SH EXIT STATUS\n.TP\n0\nSuccess.\n.TP\n1\nA check failed (the lab stays up).\n"
      << ".TP\n2\nInvalid input or usage; nothing was touched.\n"
      << ".TP\n3\nThe operation failed; what it created was removed again. Also: missing privileges "
         "(CAP_NET_ADMIN and CAP_SYS_ADMIN) or a kernel feature the topology needs.\n"
      << ".PP\n\\fBexec\\fR exits with the command's own exit code (127: not found, 126: not executable).\n"
      << ".SH ENVIRONMENT\n.TP\n.B LABCTL_STATE_DIR\nWhere labs' state lives instead of "
         "\\fI/run/labctl\\fR.\n"
      << ".SH FILES\n.TP\n.I /run/labctl/LAB/\nThe state of each running lab (mode 0700): what was applied "
         "and created, so that \\fBlabctl down\\fR can remove a lab whose \\fBup\\fR was killed.\n"
      << ".TP\n.I /usr/share/labctl/labs/\nExample labs (courseware).\n"
      << ".TP\n.I /usr/share/labctl/topology.schema.json\nThe topology file's JSON Schema.\n"
      << ".SH SHELL COMPLETION\n\\fBlabctl completion\\fR \\fIbash\\fR|\\fIzsh\\fR|\\fIfish\\fR prints a script "
         "that completes subcommands, options, files, the names of running labs and the nodes of a lab. "
         "Packages install it; to try it: \\fBsource <(labctl completion bash)\\fR.\n"
      << ".SH SEE ALSO\n.BR ip (8),\n.BR ip\\-netns (8),\n.BR dot (1),\n.BR pytest (1)\n";
    return 0;
}

}  // namespace

std::optional<int> add_shell_support(CLI::App& app, int argc, char** argv) {
    auto* completion = app.add_subcommand("completion", "Print a shell completion script (bash, zsh or fish)");
    auto shell = std::make_shared<std::string>();
    completion->add_option("SHELL", *shell, "bash, zsh or fish")
        ->required()
        ->check(CLI::IsMember({"bash", "zsh", "fish"}));
    completion->callback([shell] {
        std::cout << (*shell == "bash" ? kBash : *shell == "zsh" ? kZsh : kFish);
        throw CLI::Success();
    });

    if (argc >= 2 && std::string(argv[1]) == "__complete") return complete(app, {argv + 2, argv + argc});
    if (argc == 2 && std::string(argv[1]) == "__man") return man(app);
    return std::nullopt;
}

}  // namespace labctl::cli
