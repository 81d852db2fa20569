#include "serve/serve.hpp"

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

namespace labctl::serve {

namespace web {
// Generated from core/serve/web/ (cmake/embed_web.cmake).
extern const char* const kIndexHtml;
extern const char* const kAppJs;
extern const char* const kAppCss;
}  // namespace web

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Json = nlohmann::json;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

constexpr std::size_t kMaxConnections = 128;      // pages and API clients together
constexpr std::size_t kMaxQueuedMessages = 256;   // per page: a page this far behind is dropped
constexpr auto kRequestTimeout = std::chrono::seconds(30);
constexpr auto kHeartbeat = std::chrono::seconds(15);
constexpr std::size_t kRecentEvents = 50;

std::string to_std(beast::string_view s) { return std::string(s.data(), s.size()); }

bool valid_lab_name(const std::string& s) {
    static const std::regex re("^[a-z][a-z0-9-]{0,15}$");
    return std::regex_match(s, re);
}

std::string random_token() {
    unsigned char bytes[16];
    std::size_t got = 0;
    while (got < sizeof bytes) {
        ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_last_errno("making the page token (getrandom)");
        }
        got += static_cast<std::size_t>(n);
    }
    static const char hex[] = "0123456789abcdef";
    std::string out;
    for (unsigned char b : bytes) {
        out += hex[b >> 4];
        out += hex[b & 15];
    }
    return out;
}

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
        : io_(io), acceptor_(io), signals_(io, SIGINT, SIGTERM), heartbeat_(io), pool_(2),
          token_(random_token()), options_(options) {}

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

// --- EventStream ---------------------------------------------------------------------

void EventStream::start() {
    stream_.expires_never();
    header_ = std::make_shared<http::response<http::empty_body>>(http::status::ok, 11);
    header_->set(http::field::content_type, "text/event-stream");
    header_->set(http::field::cache_control, "no-store");
    header_->set("X-Content-Type-Options", "nosniff");
    header_->keep_alive(false);  // the body ends when the connection does
    serializer_ = std::make_shared<http::response_serializer<http::empty_body>>(*header_);
    writing_ = true;
    http::async_write_header(stream_, *serializer_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
        self->writing_ = false;
        if (ec) return self->close();
        self->write_next();
    });
    watch_close();
}

void EventStream::watch_close() {
    stream_.async_read_some(asio::buffer(sink_), [self = shared_from_this()](beast::error_code ec, std::size_t) {
        if (ec) return self->close();
        self->watch_close();  // a page sends nothing more; ignore what it does send
    });
}

void EventStream::send(std::shared_ptr<const std::string> message) {
    if (closed_) return;
    if (queue_.size() >= kMaxQueuedMessages) return close();
    queue_.push_back(std::move(message));
    if (!writing_) write_next();
}

void EventStream::write_next() {
    if (closed_ || writing_ || queue_.empty()) return;
    writing_ = true;
    auto msg = queue_.front();
    asio::async_write(stream_, asio::buffer(*msg), [self = shared_from_this(), msg](beast::error_code ec, std::size_t) {
        self->writing_ = false;
        if (ec) return self->close();
        self->queue_.pop_front();
        self->write_next();
    });
}

void EventStream::close() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
    --connections_->open;
    server_.stream_closed(this);
}

// --- Session -------------------------------------------------------------------------

Session::~Session() {
    if (stream_.socket().is_open()) --connections_->open;
}

void Session::read() {
    parser_.emplace();
    parser_->header_limit(8 * 1024);
    parser_->body_limit(4 * 1024);
    stream_.expires_after(kRequestTimeout);
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
        if (ec) {
            beast::error_code ignored;
            self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
            return;  // closed with the session
        }
        self->server_.handle(self, self->parser_->release());
    });
}

void Session::send(Response res) {
    auto sp = std::make_shared<Response>(std::move(res));
    stream_.expires_after(kRequestTimeout);
    http::async_write(stream_, *sp, [self = shared_from_this(), sp](beast::error_code ec, std::size_t) {
        if (ec || sp->need_eof()) {
            beast::error_code ignored;
            self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
            return;
        }
        self->read();
    });
}

// --- Server: listening and labs -------------------------------------------------------

std::string Server::listen() {
    beast::error_code ec;
    auto address = asio::ip::make_address(options_.bind, ec);
    if (ec) throw LabError("\"" + options_.bind + "\" is not an IP address");
    loopback_ = address.is_loopback();
    tcp::endpoint ep(address, options_.port);
    std::string shown = (address.is_v6() ? "[" + address.to_string() + "]" : address.to_string());
    auto fail = [&](const char* what) {
        throw KernelError(ec.value(), std::string(what) + " " + shown + ":" + std::to_string(options_.port));
    };
    acceptor_.open(ep.protocol(), ec);
    if (ec) fail("opening a socket for");
    ::fcntl(acceptor_.native_handle(), F_SETFD, FD_CLOEXEC);
    acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    acceptor_.bind(ep, ec);
    if (ec) fail("listening on");
    acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) fail("listening on");
    port_text_ = std::to_string(acceptor_.local_endpoint().port());
    return "http://" + shown + ":" + port_text_ + "/";
}

void Server::start() {
    signals_.async_wait([this](beast::error_code ec, int) {
        if (!ec) stop();
    });
    state_ = std::make_unique<events::StateWatcher>();
    state_fd_ = std::make_unique<asio::posix::stream_descriptor>(io_, ::fcntl(state_->fd(), F_DUPFD_CLOEXEC, 0));
    arm_state();
    for (const auto& name : events::running_labs()) refresh(name);
    accept();
    beat();
}

void Server::stop() {
    stopping_ = true;
    beast::error_code ignored;
    acceptor_.close(ignored);
    signals_.cancel(ignored);
    heartbeat_.cancel();
    if (state_fd_) state_fd_->close(ignored);
    for (auto& [name, e] : labs_)
        for (auto& d : e.fds) d->close(ignored);
    auto streams = streams_;
    for (auto& s : streams) s->close();
    io_.stop();
}

void Server::accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
        if (ec) {
            if (!stopping_) accept();
            return;
        }
        ::fcntl(socket.native_handle(), F_SETFD, FD_CLOEXEC);
        if (connections_->open >= kMaxConnections) {
            beast::error_code ignored;
            socket.close(ignored);  // too many: the newcomer waits for nothing
        } else {
            ++connections_->open;
            std::make_shared<Session>(std::move(socket), *this, connections_)->start();
        }
        accept();
    });
}

void Server::beat() {
    heartbeat_.expires_after(kHeartbeat);
    heartbeat_.async_wait([this](beast::error_code ec) {
        if (ec) return;
        auto comment = std::make_shared<const std::string>(": keep-alive\n\n");
        auto streams = streams_;
        for (auto& s : streams) s->send(comment);
        beat();
    });
}

void Server::arm_state() {
    state_fd_->async_wait(asio::posix::descriptor_base::wait_read, [this](beast::error_code ec) {
        if (ec) return;
        std::vector<std::string> changed;
        try {
            changed = state_->read();
        } catch (const std::exception&) {
        }
        for (const auto& name : changed)
            if (valid_lab_name(name)) refresh(name);
        arm_state();
    });
}

void Server::arm_lab(const std::string& name, std::uint64_t generation, std::size_t i) {
    auto it = labs_.find(name);
    if (it == labs_.end() || it->second.generation != generation) return;
    it->second.fds[i]->async_wait(asio::posix::descriptor_base::wait_read, [this, name, generation, i](beast::error_code ec) {
        if (ec) return;
        auto it = labs_.find(name);
        if (it == labs_.end() || it->second.generation != generation) return;
        std::vector<events::Event> evs;
        try {
            evs = it->second.watcher->read(i);
        } catch (const std::exception&) {
            return refresh(name);  // the namespace went away under us
        }
        for (const auto& e : evs) {
            Json j = events::to_json(e);
            it->second.recent.push_back(j);
            if (it->second.recent.size() > kRecentEvents) it->second.recent.pop_front();
            broadcast("event", j);
        }
        if (!evs.empty()) push_view(name, false);
        arm_lab(name, generation, i);
    });
}

// True when status says a node's namespace is gone while we still hold a socket in it.
bool watching_a_gone_namespace(const LabEntry& e) {
    if (!e.status.contains("nodes") || !e.status["nodes"].is_array()) return false;
    const auto& topo = e.watcher->topology();
    for (const auto& n : e.status["nodes"]) {
        if (!n.is_object() || !n.contains("present") || n["present"] != false) continue;
        auto i = topo.find_node(n.value("name", ""));
        if (i && e.watcher->node_present(*i)) return true;
    }
    return false;
}

bool lab_is_up(const std::string& name) {
    try {
        auto rec = state::Journal::load(name);
        return rec && rec->complete;
    } catch (const std::exception&) {
        return false;
    }
}

void Server::refresh(const std::string& name) {
    if (!lab_is_up(name)) {
        remove_lab(name);
        return;
    }
    std::string text;
    try {
        text = state::Journal::topology_text(name);
    } catch (const std::exception&) {
        return remove_lab(name);
    }
    auto it = labs_.find(name);
    if (it != labs_.end() && it->second.topology_text == text) return refresh_status(name);
    if (loading_.count(name)) {
        load_again_.insert(name);
        return;
    }
    loading_.insert(name);
    asio::post(pool_, [this, name, text] {
        auto loaded = std::make_shared<Loaded>();
        loaded->text = text;
        try {
            auto topo = topology::load_text(text, name);
            loaded->raw = Json::parse(text, nullptr, false);
            loaded->watcher = std::make_unique<events::LabWatcher>(topo);
            loaded->status = engine::Lab::attach(name).status();
            try {
                loaded->svg = graph::to_svg(topo, graph::DotOptions{true});
            } catch (const std::exception&) {
                // No Graphviz: the page lists nodes and links instead of drawing them.
            }
        } catch (const std::exception& e) {
            loaded->error = e.what();
        }
        asio::post(io_, [this, name, loaded] { install(name, loaded); });
    });
}

void Server::install(const std::string& name, std::shared_ptr<Loaded> loaded) {
    loading_.erase(name);
    if (stopping_) return;
    if (load_again_.erase(name)) return refresh(name);
    if (!loaded->error.empty() || !lab_is_up(name)) return remove_lab(name);
    LabEntry fresh;
    if (auto old = labs_.find(name); old != labs_.end()) {
        // Its topology was replaced (apply): redrawn, events kept, check results not
        // (the checks may differ now).
        fresh.recent = std::move(old->second.recent);
        remove_lab(name);
    }
    fresh.generation = ++generations_;
    fresh.topology_text = loaded->text;
    fresh.raw = std::move(loaded->raw);
    fresh.watcher = std::move(loaded->watcher);
    fresh.status = std::move(loaded->status);
    fresh.svg = std::move(loaded->svg);
    fresh.running = checking_.count(name) > 0;
    for (int fd : fresh.watcher->fds())
        fresh.fds.push_back(std::make_unique<asio::posix::stream_descriptor>(io_, ::fcntl(fd, F_DUPFD_CLOEXEC, 0)));
    auto& e = labs_[name] = std::move(fresh);
    for (std::size_t i = 0; i < e.fds.size(); ++i) arm_lab(name, e.generation, i);
    push_view(name, true);
}

void Server::refresh_status(const std::string& name) {
    auto& e = labs_.at(name);
    if (e.status_pending) {
        e.status_again = true;
        return;
    }
    e.status_pending = true;
    std::uint64_t generation = e.generation;
    asio::post(pool_, [this, name, generation] {
        auto status = std::make_shared<Json>();
        try {
            *status = engine::Lab::attach(name).status();
        } catch (const std::exception&) {
        }
        asio::post(io_, [this, name, generation, status] {
            auto it = labs_.find(name);
            if (it == labs_.end() || it->second.generation != generation) return;
            it->second.status_pending = false;
            if (!status->is_null()) it->second.status = std::move(*status);
            if (watching_a_gone_namespace(it->second)) {
                // Let the namespace go: watch the lab again without it.
                it->second.topology_text.clear();
                return refresh(name);
            }
            push_view(name, false);
            if (std::exchange(it->second.status_again, false)) refresh_status(name);
        });
    });
}

void Server::remove_lab(const std::string& name) {
    auto it = labs_.find(name);
    if (it == labs_.end()) return;
    beast::error_code ignored;
    for (auto& d : it->second.fds) d->close(ignored);
    labs_.erase(it);  // closes the watcher's sockets: the namespaces may go
    broadcast("remove", Json{{"name", name}});
}

Json Server::lab_view(const std::string& name, const LabEntry& e, bool with_svg) const {
    const events::LabWatcher& w = *e.watcher;
    Json v = make_view(
        w.topology(), e.raw, e.status, e.results, e.running, [&](std::size_t n) { return w.node_present(n); },
        [&](std::size_t n, const std::string& ifname) { return w.interface(n, ifname); });
    (void)name;
    v["results_time"] = e.results_time;
    if (with_svg) {
        v["svg"] = e.svg;
        v["recent"] = Json(e.recent);
    }
    return v;
}

void Server::push_view(const std::string& name, bool with_svg) {
    auto it = labs_.find(name);
    if (it == labs_.end()) return;
    broadcast("lab", lab_view(name, it->second, with_svg));
}

std::string sse(const std::string& event, const Json& data) {
    // JSON dumped on one line never holds a newline: one data line per message.
    return "event: " + event + "\ndata: " + data.dump() + "\n\n";
}

void Server::broadcast(const std::string& event, const Json& data) {
    if (streams_.empty()) return;
    auto msg = std::make_shared<const std::string>(sse(event, data));
    auto streams = streams_;
    for (auto& s : streams) s->send(msg);
}

std::string Server::snapshot() const {
    Json labs = Json::array();
    for (const auto& [name, e] : labs_) labs.push_back(lab_view(name, e, true));
    return sse("labs", Json{{"labs", labs}});
}

// --- Server: requests ----------------------------------------------------------------

Response Server::reply(const Request& req, http::status status, std::string type, std::string body) const {
    Response res{status, req.version()};
    res.set(http::field::server, "labctl");
    res.set(http::field::content_type, type);
    res.set(http::field::cache_control, "no-store");
    res.set("X-Content-Type-Options", "nosniff");
    res.set("X-Frame-Options", "DENY");
    res.set("Referrer-Policy", "no-referrer");
    res.set("Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'");
    res.keep_alive(req.keep_alive());
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
}

// Only names of this machine's loopback when we listen there: a page from elsewhere that
// rebinds its own name to 127.0.0.1 must not read us.
bool Server::host_allowed(const Request& req) const {
    if (!loopback_) return true;
    std::string host = to_std(req[http::field::host]);
    if (host.empty()) return false;
    std::string name = host;
    if (!host.empty() && host.front() == '[') {
        auto end = host.find(']');
        if (end == std::string::npos) return false;
        name = host.substr(1, end - 1);
    } else if (auto colon = host.rfind(':'); colon != std::string::npos) {
        name = host.substr(0, colon);
    }
    if (name == "localhost") return true;
    beast::error_code ec;
    auto a = asio::ip::make_address(name, ec);
    return !ec && a.is_loopback();
}

// Why a state-changing request is refused; "" when it may run.
std::string Server::refuse_post(const Request& req) const {
    if (to_std(req["X-Labctl-Token"]) != token_) return "missing or wrong X-Labctl-Token (use the page's button)";
    std::string origin = to_std(req[http::field::origin]);
    if (!origin.empty() && origin != "http://" + to_std(req[http::field::host]))
        return "cross-origin request refused (Origin " + origin + ")";
    std::string site = to_std(req["Sec-Fetch-Site"]);
    if (!site.empty() && site != "same-origin" && site != "none") return "cross-site request refused";
    return "";
}

template <class Job>
void Server::in_pool(const std::shared_ptr<Session>& session, const Request& req, Job job) {
    auto head = std::make_shared<Request>();
    head->version(req.version());
    head->keep_alive(req.keep_alive());
    asio::post(pool_, [this, session, head, job] {
        auto res = std::make_shared<Response>(job(*head));
        asio::post(io_, [session, res] { session->send(std::move(*res)); });
    });
}

void Server::run_checks(const std::shared_ptr<Session>& session, const Request& req, const std::string& name) {
    // A lab just up may not be drawn yet (it loads off this thread): up is what counts.
    if (!labs_.count(name) && !lab_is_up(name))
        return session->send(reply_json(req, http::status::not_found, {{"error", "lab " + name + " is not up"}}));
    if (checking_.count(name))
        return session->send(reply_json(req, http::status::conflict, {{"error", "the checks of " + name + " are running"}}));
    checking_.insert(name);
    auto it = labs_.find(name);
    if (it != labs_.end()) it->second.running = true;
    push_view(name, false);
    auto head = std::make_shared<Request>();
    head->version(req.version());
    head->keep_alive(req.keep_alive());
    asio::post(pool_, [this, session, head, name] {
        auto out = std::make_shared<Json>();
        http::status code = http::status::ok;
        try {
            auto lab = engine::Lab::attach(name);
            auto checks = lab.verify(false);
            Json a = Json::array();
            bool ok = true;
            for (const auto& c : checks) {
                a.push_back(engine::to_json(c));
                ok = ok && c.ok;
            }
            *out = Json{{"lab", name}, {"checks", a}, {"ok", ok}};
        } catch (const LabError& e) {
            *out = Json{{"error", e.what()}};
            code = http::status::not_found;
        } catch (const std::exception& e) {
            *out = Json{{"error", e.what()}};
            code = http::status::internal_server_error;
        }
        asio::post(io_, [this, session, head, name, out, code] {
            checking_.erase(name);
            auto it = labs_.find(name);
            if (it != labs_.end()) {
                it->second.running = false;
                if (out->contains("checks")) {
                    it->second.results = (*out)["checks"];
                    it->second.results_time = events::now();
                }
                push_view(name, false);
            }
            session->send(reply_json(*head, code, *out));
        });
    });
}

void Server::handle(const std::shared_ptr<Session>& session, Request req) {
    std::string target = to_std(req.target());
    std::string path = target.substr(0, target.find('?'));
    if (!host_allowed(req))
        return session->send(reply(req, http::status::forbidden, "text/plain; charset=utf-8",
                                   "this server answers only to names of the loopback address\n"));
    auto not_found = [&] {
        session->send(reply(req, http::status::not_found, "text/plain; charset=utf-8", "not found\n"));
    };
    const std::string labs_prefix = "/api/labs/";
    std::string lab, rest;
    if (path.starts_with(labs_prefix)) {
        std::string tail = path.substr(labs_prefix.size());
        auto slash = tail.find('/');
        lab = tail.substr(0, slash);
        rest = slash == std::string::npos ? "" : tail.substr(slash);
        if (!valid_lab_name(lab)) return not_found();
    }

    if (req.method() == http::verb::post) {
        if (lab.empty() || rest != "/checks") {
            bool known = path == "/" || path == "/app.js" || path == "/app.css" || path == "/api/labs" ||
                         path == "/api/events" || (!lab.empty() && rest.empty());
            if (!known) return not_found();
            return session->send(reply(req, http::status::method_not_allowed, "text/plain; charset=utf-8",
                                       "method not allowed\n"));
        }
        if (auto why = refuse_post(req); !why.empty())
            return session->send(reply_json(req, http::status::forbidden, {{"error", why}}));
        return run_checks(session, req, lab);
    }
    if (req.method() != http::verb::get) {
        auto res = reply(req, http::status::method_not_allowed, "text/plain; charset=utf-8", "method not allowed\n");
        res.set(http::field::allow, "GET, POST");
        return session->send(std::move(res));
    }

    if (path == "/") {
        std::string page = web::kIndexHtml;
        const std::string mark = "{{TOKEN}}";
        if (auto at = page.find(mark); at != std::string::npos) page.replace(at, mark.size(), token_);
        return session->send(reply(req, http::status::ok, "text/html; charset=utf-8", page));
    }
    if (path == "/app.js") return session->send(reply(req, http::status::ok, "text/javascript; charset=utf-8", web::kAppJs));
    if (path == "/app.css") return session->send(reply(req, http::status::ok, "text/css; charset=utf-8", web::kAppCss));
    if (path == "/api/labs") {
        return in_pool(session, req, [this](const Request& head) {
            try {
                return reply(head, http::status::ok, "application/json", engine::status_all().dump(2) + "\n");
            } catch (const std::exception& e) {
                return reply_json(head, http::status::internal_server_error, {{"error", e.what()}});
            }
        });
    }
    if (!lab.empty() && rest.empty()) {
        return in_pool(session, req, [this, lab](const Request& head) {
            try {
                return reply(head, http::status::ok, "application/json", engine::Lab::attach(lab).status().dump(2) + "\n");
            } catch (const LabError& e) {
                return reply_json(head, http::status::not_found, {{"error", e.what()}});
            } catch (const std::exception& e) {
                return reply_json(head, http::status::internal_server_error, {{"error", e.what()}});
            }
        });
    }
    if (path == "/api/events") {
        auto stream = std::make_shared<EventStream>(session->take_stream(), *this, connections_);
        streams_.push_back(stream);
        stream->start();
        stream->send(std::make_shared<const std::string>(snapshot()));
        return;
    }
    not_found();
}

}  // namespace

void run(const Options& options, const std::function<void(const std::string& url)>& ready) {
    asio::io_context io{1};
    Server server(io, options);
    std::string url = server.listen();
    server.start();
    if (ready) ready(url);
    io.run();
    server.join_pool();
}

}  // namespace labctl::serve
