#include "graph/graph.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include "base/error.hpp"
#include "base/io.hpp"
#include "base/unique_fd.hpp"

extern char** environ;

namespace labctl::graph {

namespace {

using namespace topology;

std::string escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    return out;
}

std::string addresses(const Interface& iface) {
    std::string text;
    for (const auto& p : iface.addresses) text += "\\n" + p.to_string();
    return text;
}

const char* shape(NodeKind kind) {
    switch (kind) {
        case NodeKind::host: return "box, style=\"rounded,filled\", fillcolor=\"#e8f1fb\"";
        case NodeKind::router: return "ellipse, style=filled, fillcolor=\"#fdf0d5\"";
        case NodeKind::switch_: return "box3d, style=filled, fillcolor=\"#e4f4e4\"";
    }
    return "box";
}

std::string node_label(const Node& node) {
    std::string label = node.name + "\\n(" + to_string(node.kind) + ")";
    // Addresses not shown on a link: loopback, dummy, vlan, bridge interfaces.
    for (const auto& iface : node.interfaces) {
        bool shown_elsewhere =
            iface.type == InterfaceType::veth || iface.type == InterfaceType::tap || iface.type == InterfaceType::tun;
        if (shown_elsewhere || (iface.addresses.empty() && iface.type == InterfaceType::loopback)) continue;
        if (iface.addresses.empty() && node.kind == NodeKind::switch_ && iface.name == "br0") continue;
        std::string what = iface.name;
        if (iface.type == InterfaceType::vlan)
            what += " (vlan " + std::to_string(iface.vlan_id) + " on " + node.interfaces[iface.parent].name + ")";
        else if (iface.type != InterfaceType::loopback && iface.type != InterfaceType::veth)
            what += std::string(" (") + to_string(iface.type) + ")";
        std::string addrs = addresses(iface);
        label += "\\n" + escape(what) + (addrs.empty() ? "" : ":" + addrs.substr(1));
    }
    return label;
}

std::string impair_text(const Impairment& x) {
    std::string t;
    auto add = [&](const std::optional<double>& v, const char* prefix, const char* unit) {
        if (!v) return;
        char buf[64];
        std::snprintf(buf, sizeof buf, "%s%g%s", prefix, *v, unit);
        t += (t.empty() ? "" : "\\n") + std::string(buf);
    };
    add(x.delay_ms, "delay ", " ms");
    add(x.jitter_ms, "jitter ", " ms");
    add(x.loss_pct, "loss ", "%");
    add(x.rate_mbit, "rate ", " Mbit/s");
    add(x.duplicate_pct, "duplicate ", "%");
    add(x.reorder_pct, "reorder ", "%");
    return t;
}

std::string end_label(const Interface& iface) {
    std::string label = escape(iface.name) + addresses(iface);
    if (iface.pvid) label += "\\npvid " + std::to_string(*iface.pvid);
    if (!iface.tagged.empty()) {
        label += "\\ntagged";
        for (auto v : iface.tagged) label += " " + std::to_string(v);
    }
    return label;
}

// Runs Graphviz's dot -Tsvg on `text`; returns what it writes on stdout.
std::string run_dot(const std::string& text, const std::string& shown) {
    int in_fds[2], out_fds[2];
    if (::pipe2(in_fds, O_CLOEXEC) != 0) throw_last_errno("graph: creating a pipe");
    UniqueFd read_end(in_fds[0]), write_end(in_fds[1]);
    if (::pipe2(out_fds, O_CLOEXEC) != 0) throw_last_errno("graph: creating a pipe");
    UniqueFd out_read(out_fds[0]), out_write(out_fds[1]);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, read_end.get(), STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out_write.get(), STDOUT_FILENO);
    char* argv[] = {const_cast<char*>("dot"), const_cast<char*>("-Tsvg"), nullptr};
    pid_t pid = 0;
    int err = ::posix_spawnp(&pid, "dot", &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (err != 0) throw KernelError(err, "graph: running Graphviz's dot (install the graphviz package)");
    read_end.reset();
    out_write.reset();
    // dot reads the whole graph before it writes anything: writing first cannot block
    // on a full output pipe.
    std::string error, output;
    try {
        write_all(write_end.get(), text, "graph: writing to dot");
        write_end.reset();
        output = read_all(out_read.get(), "graph: reading from dot");
    } catch (const KernelError& e) {
        error = e.what();
    }
    write_end.reset();
    out_read.reset();
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !error.empty())
        throw LabError(shown + ": Graphviz's dot failed" + (error.empty() ? "" : " (" + error + ")"));
    return output;
}

}  // namespace

std::string to_dot(const Topology& topo, const DotOptions& options) {
    std::string out;
    out += "graph \"" + escape(topo.name) + "\" {\n";
    std::string title = escape(topo.name);
    if (!topo.description.empty()) title += "\\n" + escape(topo.description);
    out += "  graph [label=\"" + title +
        "\", labelloc=t, fontname=\"Helvetica\", fontsize=14, overlap=false, splines=true, "
        "nodesep=0.6, ranksep=1.0];\n";
    out += "  node [fontname=\"Helvetica\", fontsize=11];\n";
    out += "  edge [fontname=\"Helvetica\", fontsize=9, labelfontsize=9];\n";
    for (const auto& node : topo.nodes)
        out += "  \"" + escape(node.name) + "\" [shape=" + shape(node.kind) + ", label=\"" + node_label(node) + "\"" +
            (options.element_ids ? ", id=\"node-" + escape(node.name) + "\"" : "") + "];\n";
    for (const auto& node : topo.nodes) {
        for (const auto& iface : node.interfaces) {
            if (iface.type != InterfaceType::tap && iface.type != InterfaceType::tun) continue;
            std::string id = escape(node.name + ":" + iface.name);
            std::string label = escape(iface.name) + " (" + to_string(iface.type) + ")";
            if (iface.owner) label += "\\nowner " + std::to_string(*iface.owner);
            if (iface.group) label += "\\ngroup " + std::to_string(*iface.group);
            label += addresses(iface);
            out += "  \"" + id + "\" [shape=cds, style=\"dashed,filled\", fillcolor=\"#f3e8fb\", label=\"" + label +
                "\"];\n";
            out += "  \"" + escape(node.name) + "\" -- \"" + id + "\" [style=dashed];\n";
        }
    }
    for (std::size_t i = 0; i < topo.links.size(); ++i) {
        const auto& link = topo.links[i];
        const auto& a = link.ends[0];
        const auto& b = link.ends[1];
        if (a.node == b.node) continue;  // a placeholder of an invalid link
        std::string label = impair_text(link.impair);
        if (link.mtu) label = "mtu " + std::to_string(*link.mtu) + (label.empty() ? "" : "\\n" + label);
        out += "  \"" + escape(topo.nodes[a.node].name) + "\" -- \"" + escape(topo.nodes[b.node].name) +
            "\" [taillabel=\"" + end_label(topo.interface(a)) + "\", headlabel=\"" + end_label(topo.interface(b)) +
            "\"";
        if (!label.empty()) out += ", label=\"" + label + "\", style=bold";
        if (options.element_ids) out += ", id=\"link-" + std::to_string(i) + "\"";
        out += "];\n";
    }
    out += "}\n";
    return out;
}

void render(const Topology& topo, const std::string& path) {
    auto dot_pos = path.rfind('.');
    std::string ext = dot_pos == std::string::npos ? "" : path.substr(dot_pos + 1);
    for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (ext != "dot" && ext != "gv" && ext != "svg" && ext != "png")
        throw UsageError(path + ": unknown picture format; use .dot, .svg or .png");
    std::string text = to_dot(topo);
    // Every format opens the output itself first: an unwritable path is the same error.
    UniqueFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!out) throw_last_errno(path + ": creating");
    if (ext == "dot" || ext == "gv") {
        write_all(out.get(), text, path + ": writing");
        return;
    }

    // dot reads the graph on stdin and writes the picture to the file as its stdout.
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw_last_errno("graph: creating a pipe");
    UniqueFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, read_end.get(), STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out.get(), STDOUT_FILENO);
    std::string format = "-T" + ext;
    char* argv[] = {const_cast<char*>("dot"), format.data(), nullptr};
    pid_t pid = 0;
    int err = ::posix_spawnp(&pid, "dot", &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (err != 0) throw KernelError(err, "graph: running Graphviz's dot (install the graphviz package)");
    out.reset();
    read_end.reset();
    std::string write_error;
    try {
        write_all(write_end.get(), text, "graph: writing to dot");
    } catch (const KernelError& e) {
        write_error = e.what();
    }
    write_end.reset();
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        throw LabError(path + ": Graphviz's dot failed" + (write_error.empty() ? "" : " (" + write_error + ")"));
}

std::string to_dot(const Topology& topo) { return to_dot(topo, DotOptions{}); }

std::string to_svg(const Topology& topo, const DotOptions& options) {
    return run_dot(to_dot(topo, options), topo.name + ": drawing");
}

}  // namespace labctl::graph
