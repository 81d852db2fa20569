// `labctl serve`: answering requests (the pages, the API, running checks) (server.hpp).

#include "serve/server.hpp"

namespace labctl::serve::detail {

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
        return session->send(
            reply_json(req, http::status::conflict, {{"error", "the checks of " + name + " are running"}}));
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
            return session->send(
                reply(req, http::status::method_not_allowed, "text/plain; charset=utf-8", "method not allowed\n"));
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
    if (path == "/app.js")
        return session->send(reply(req, http::status::ok, "text/javascript; charset=utf-8", web::kAppJs));
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
                return reply(head, http::status::ok, "application/json",
                             engine::Lab::attach(lab).status().dump(2) + "\n");
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

}  // namespace labctl::serve::detail
