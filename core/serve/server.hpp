#pragma once
// Internal to serve/: the server's types, shared by serve.cpp (streams, sessions, the
// server's listening and lab watching) and requests.cpp (answering requests). The rules
// of `labctl serve` are in serve.hpp.

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>
// clang-format off
#include <boost/asio.hpp>
// clang-format on
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <algorithm>
#include <array>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "base/error.hpp"
#include "engine/lab.hpp"
#include "events/events.hpp"
#include "graph/graph.hpp"
#include "serve/view.hpp"
#include "state/state.hpp"
#include "topology/load.hpp"

#include "serve/serve.hpp"

namespace labctl::serve {

namespace web {
// Generated from core/serve/web/ (cmake/embed_web.cmake).
extern const char* const kIndexHtml;
extern const char* const kAppJs;
extern const char* const kAppCss;
}  // namespace web

namespace detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Json = nlohmann::json;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

inline constexpr std::size_t kMaxConnections = 128;     // pages and API clients together
inline constexpr std::size_t kMaxQueuedMessages = 256;  // per page: a page this far behind is dropped
inline constexpr auto kRequestTimeout = std::chrono::seconds(30);
inline constexpr auto kHeartbeat = std::chrono::seconds(15);
inline constexpr std::size_t kRecentEvents = 50;

std::string to_std(beast::string_view s);

bool valid_lab_name(const std::string& s);

std::string random_token();

class Server;

// Open connections, shared with the connections themselves: a connection may outlive
// the Server (destroyed with the io_context's pending handlers at exit).
struct Connections {
    std::size_t open = 0;
};

// A page listening to /api/events: a stream of Server-Sent Events, written in order
// from a queue; its reads only detect the page going away.
class EventStream : public std::enable_shared_from_this<EventStream> {
public:
    EventStream(beast::tcp_stream stream, Server& server, std::shared_ptr<Connections> connections)
        : stream_(std::move(stream)), server_(server), connections_(std::move(connections)) {}
    void start();
    void send(std::shared_ptr<const std::string> message);
    void close();

private:
    void write_next();
    void watch_close();
    beast::tcp_stream stream_;
    Server& server_;
    std::shared_ptr<Connections> connections_;
    std::deque<std::shared_ptr<const std::string>> queue_;
    bool writing_ = false;
    bool closed_ = false;
    std::array<char, 512> sink_{};
    std::shared_ptr<http::response<http::empty_body>> header_;
    std::shared_ptr<http::response_serializer<http::empty_body>> serializer_;
};

class Session : public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket socket, Server& server, std::shared_ptr<Connections> connections)
        : stream_(std::move(socket)), server_(server), connections_(std::move(connections)) {}
    void start() { read(); }
    void send(Response res);
    // Hands the connection over to an event stream.
    beast::tcp_stream take_stream() { return std::move(stream_); }
    ~Session();

private:
    void read();
    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    Server& server_;
    std::shared_ptr<Connections> connections_;
};

struct LabEntry {
    std::uint64_t generation = 0;
    std::string topology_text;
    Json raw;  // the topology file as JSON
    std::unique_ptr<events::LabWatcher> watcher;
    std::vector<std::unique_ptr<asio::posix::stream_descriptor>> fds;
    Json status;  // engine::Lab::status()
    std::string svg;
    Json results = nullptr;  // the last run of its checks
    double results_time = 0;
    bool running = false;
    bool status_pending = false, status_again = false;
    std::deque<Json> recent;  // the last events, for pages that open later
};

// What the pool made of a lab that came up: everything that blocks, done off the
// serving thread.
struct Loaded {
    std::string text;
    std::unique_ptr<events::LabWatcher> watcher;
    Json status, raw;
    std::string svg;
    std::string error;
};

class Server {
public:
    Server(asio::io_context& io, const Options& options)
        : io_(io),
          acceptor_(io),
          signals_(io, SIGINT, SIGTERM),
          heartbeat_(io),
          pool_(2),
          token_(random_token()),
          options_(options) {}

    std::string listen();
    void start();
    void stop();
    void join_pool() { pool_.join(); }

    void handle(const std::shared_ptr<Session>& session, Request req);
    void stream_closed(EventStream* s) {
        streams_.erase(std::find_if(streams_.begin(), streams_.end(), [&](auto& p) { return p.get() == s; }),
                       streams_.end());
    }
    std::string snapshot() const;

private:
    void accept();
    void arm_state();
    void arm_lab(const std::string& name, std::uint64_t generation, std::size_t i);
    void refresh(const std::string& name);
    void install(const std::string& name, std::shared_ptr<Loaded> loaded);
    void refresh_status(const std::string& name);
    void remove_lab(const std::string& name);
    void push_view(const std::string& name, bool with_svg);
    void broadcast(const std::string& event, const Json& data);
    void beat();
    Json lab_view(const std::string& name, const LabEntry& e, bool with_svg) const;

    Response reply(const Request& req, http::status status, std::string type, std::string body) const;
    Response reply_json(const Request& req, http::status status, const Json& j) const {
        return reply(req, status, "application/json", j.dump(2) + "\n");
    }
    bool host_allowed(const Request& req) const;
    std::string refuse_post(const Request& req) const;
    template <class Job>
    void in_pool(const std::shared_ptr<Session>& session, const Request& req, Job job);
    void run_checks(const std::shared_ptr<Session>& session, const Request& req, const std::string& name);

    asio::io_context& io_;
    tcp::acceptor acceptor_;
    asio::signal_set signals_;
    asio::steady_timer heartbeat_;
    asio::thread_pool pool_;
    std::string token_;
    Options options_;
    bool loopback_ = true;
    std::string port_text_;
    std::shared_ptr<Connections> connections_ = std::make_shared<Connections>();
    bool stopping_ = false;

    std::unique_ptr<events::StateWatcher> state_;
    std::unique_ptr<asio::posix::stream_descriptor> state_fd_;
    std::map<std::string, LabEntry> labs_;
    std::set<std::string> loading_, load_again_;
    std::set<std::string> checking_;  // labs whose checks run now
    std::uint64_t generations_ = 0;
    std::vector<std::shared_ptr<EventStream>> streams_;
};

// Whether lab NAME is up now (serve.cpp).
bool lab_is_up(const std::string& name);

}  // namespace detail

}  // namespace labctl::serve
