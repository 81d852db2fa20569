#pragma once
// `labctl serve`: a web page of every running lab, live. HTTP by Boost.Beast on one
// Asio thread; the page's state comes from events/ (netlink notifications per lab,
// inotify on the state directory), pushed to browsers as Server-Sent Events.
//
// Rules:
// - One LabWatcher per running lab, shared by every open page: a page costs a socket
//   and a queue, never a netlink socket or a dump. Slow pages are dropped, not waited for.
// - Read-only except "run checks", a POST that must carry the page's token (a random
//   value only pages served by us can read) and, when the browser sends one, an Origin
//   equal to our own. Requests naming another host than ours are refused when we listen
//   on loopback (DNS rebinding).
// - Only the app's own paths are served; everything else is 404.
// - Work that blocks (status, checks, Graphviz) runs on a small pool, never on the
//   thread that serves pages.

#include <cstdint>
#include <functional>
#include <string>

namespace labctl::serve {

struct Options {
    std::string bind = "127.0.0.1";
    std::uint16_t port = 8480;  // 0: any free port (the URL passed to `ready` says which)
};

// Serves until SIGINT or SIGTERM. `ready` is called once listening, with the page's
// URL. Throws KernelError when the address cannot be bound, LabError for a bad address.
void run(const Options& options, const std::function<void(const std::string& url)>& ready);

}  // namespace labctl::serve
