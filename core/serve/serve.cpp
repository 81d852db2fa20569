// `labctl serve` (serve.hpp): event streams, sessions, and the server's listening, lab
// watching and views; answering requests is in requests.cpp (server.hpp: the types).

#include "serve/serve.hpp"
#include "serve/server.hpp"

namespace labctl::serve {

namespace detail {

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
        } catch (const std::exception&) {}
        for (const auto& name : changed)
            if (valid_lab_name(name)) refresh(name);
        arm_state();
    });
}

void Server::arm_lab(const std::string& name, std::uint64_t generation, std::size_t i) {
    auto it = labs_.find(name);
    if (it == labs_.end() || it->second.generation != generation) return;
    it->second.fds[i]->async_wait(asio::posix::descriptor_base::wait_read,
                                  [this, name, generation, i](beast::error_code ec) {
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
        } catch (const std::exception&) {}
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

}  // namespace detail

void run(const Options& options, const std::function<void(const std::string& url)>& ready) {
    boost::asio::io_context io{1};
    detail::Server server(io, options);
    std::string url = server.listen();
    server.start();
    if (ready) ready(url);
    io.run();
    server.join_pool();
}

}  // namespace labctl::serve
