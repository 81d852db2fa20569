#include "engine/node_command.hpp"

#include "base/error.hpp"

namespace labctl::engine::detail {

proc::Command node_command(const topology::Node& node, const std::vector<std::string>& argv, int netns_fd,
                           const std::string& folder) {
    proc::Command cmd{node.netns, argv, {}, netns_fd, node.name};
    std::string home = "/root";
    if (!node.user.empty()) {
        try {
            cmd.account = proc::resolve_user(node.user);
        } catch (const LabError& e) {
            throw LabError(node.name + ": " + e.what());
        }
        home = cmd.account->home;
    }
    std::vector<std::string> env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + home,
                                    "LANG=C.UTF-8"};
    for (const auto& [key, value] : node.env) {
        const std::string prefix = key + "=";
        std::erase_if(env, [&](const std::string& e) { return e.starts_with(prefix); });
        env.push_back(prefix + value);
    }
    cmd.environment = std::move(env);
    cmd.cwd = folder;
    return cmd;
}

}  // namespace labctl::engine::detail
