#include "nl/nl.hpp"

#include <libmnl/libmnl.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "base/error.hpp"
#include "nl/fault.hpp"

namespace labctl::nl {

namespace {

// Acks of one buffer must fit in the receive queue at once; each ack is its own skb
// (~1 KiB of truesize), so a 32 KiB buffer of ~100-byte requests needs ~300 KiB.
constexpr std::size_t kBatchBufferSize = 32 * 1024;
constexpr int kReceiveBufferSize = 32 * 1024 * 1024;
constexpr int kSendBufferSize = 4 * 1024 * 1024;
// Big enough for any dump part the kernel builds (it caps them at 32 KiB, or one
// message when a single one is larger).
constexpr std::size_t kReceiveChunk = 64 * 1024;
// Acks are queued before sendto() returns; this only guards against a kernel that
// does not ack at all (then we report instead of hanging).
constexpr int kAckTimeoutMs = 5000;
constexpr int kDumpAttempts = 10;
// EBUSY and ENOBUFS answered by the kernel for one request are transient (a device
// busy for a moment, memory pressure): such a request is sent again, at most
// kTransientAttempts times in all, waiting 10, 20, 40 ms in between. Other errors
// are final; so is a lost ack (ENOBUFS from an overrun socket), whose request may
// have been applied.
constexpr int kTransientAttempts = 4;
constexpr auto kTransientBackoff = std::chrono::milliseconds(10);

bool is_transient(int err) { return err == EBUSY || err == ENOBUFS; }

void set_buffer(int fd, int force_opt, int opt, int size) {
    // SO_*BUFFORCE ignores net.core.{r,w}mem_max but needs CAP_NET_ADMIN.
    if (::setsockopt(fd, SOL_SOCKET, force_opt, &size, sizeof size) == 0) return;
    if (::setsockopt(fd, SOL_SOCKET, opt, &size, sizeof size) != 0)
        throw_last_errno("netlink socket: setting buffer size");
}

// The kernel's extended ack text: NLMSGERR_ATTR_MSG, or the missing attribute's type.
std::string extack_text(const nlmsghdr* nlh) {
    if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return {};
    const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
    std::size_t offset = sizeof(nlmsgerr);
    // Without NLM_F_CAPPED the kernel echoes our whole request before the TLVs.
    if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) offset += NLMSG_ALIGN(err->msg.nlmsg_len - sizeof(nlmsghdr));
    const std::size_t payload = mnl_nlmsg_get_payload_len(nlh);
    if (offset >= payload) return {};
    struct Found {
        std::string msg;
        std::string missing;
    } found;
    mnl_attr_parse_payload(
        reinterpret_cast<const char*>(err) + offset, payload - offset,
        [](const nlattr* attr, void* data) -> int {
            auto* f = static_cast<Found*>(data);
            const auto type = mnl_attr_get_type(attr);
            if (type == NLMSGERR_ATTR_MSG && mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) == 0)
                f->msg = mnl_attr_get_str(attr);
            else if (type == NLMSGERR_ATTR_MISS_TYPE && mnl_attr_validate(attr, MNL_TYPE_U32) == 0)
                f->missing = "missing attribute type " + std::to_string(mnl_attr_get_u32(attr));
            return MNL_CB_OK;
        },
        &found);
    if (!found.msg.empty()) return found.msg;
    return found.missing;
}

int ack_error(const nlmsghdr* nlh) {
    if (mnl_nlmsg_get_payload_len(nlh) < sizeof(nlmsgerr)) return EBADMSG;
    return -static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh))->error;
}

// Waits up to `timeout_ms` (-1: forever) for data and reads one datagram into `buf`.
// Returns its length, 0 on timeout, -ENOBUFS when the kernel dropped messages for us.
// Throws KernelError for other socket errors.
ssize_t receive(Socket& sock, std::vector<std::uint8_t>& buf, int timeout_ms) {
    buf.resize(kReceiveChunk);
    for (;;) {
        pollfd pfd{sock.fd(), POLLIN, 0};
        const int ready = ::poll(&pfd, 1, timeout_ms);
        if (ready < 0) {
            if (errno == EINTR) continue;
            throw_last_errno("netlink socket: poll");
        }
        if (ready == 0) return 0;
        const ssize_t n = mnl_socket_recvfrom(sock.get(), buf.data(), buf.size());
        if (n >= 0) return n;
        if (errno == EINTR || errno == EAGAIN) continue;
        if (errno == ENOBUFS) return -ENOBUFS;
        throw_last_errno("netlink socket: receiving");
    }
}

void send_all(Socket& sock, const void* data, std::size_t len) {
    for (;;) {
        if (mnl_socket_sendto(sock.get(), data, len) >= 0) return;
        if (errno == EINTR) continue;
        throw_last_errno("netlink socket: sending " + std::to_string(len) + " bytes");
    }
}

std::atomic<std::uint64_t> restarted_dumps{0};
std::atomic<std::uint64_t> retried_requests{0};

constexpr const char* kInjected = "injected fault";

void query_once(Socket& sock, Message& msg, const std::function<void(const nlmsghdr*)>& each,
                const std::string& context);

}  // namespace

// --- Socket ------------------------------------------------------------------------

namespace {

// A random start per socket, so acks meant for an earlier socket user can never match.
// The entropy is read once per process (std::random_device costs tens of microseconds,
// and a lab opens a socket per namespace); each socket then takes the next value of a
// Weyl sequence, distinct for 2^32 sockets.
std::uint32_t next_start_seq() {
    static const std::uint32_t base =
        static_cast<std::uint32_t>(std::time(nullptr)) ^ static_cast<std::uint32_t>(std::random_device{}());
    static std::atomic<std::uint32_t> count{0};
    return base + count.fetch_add(1, std::memory_order_relaxed) * 0x9e3779b9u;
}

}  // namespace

Socket::Socket(mnl_socket* sock) : sock_(sock), seq_(next_start_seq()) {}

Socket::Socket(Socket&& other) noexcept : sock_(std::exchange(other.sock_, nullptr)), seq_(other.seq_) {}

Socket& Socket::operator=(Socket&& other) noexcept {
    if (this != &other) {
        if (sock_) mnl_socket_close(sock_);
        sock_ = std::exchange(other.sock_, nullptr);
        seq_ = other.seq_;
    }
    return *this;
}

Socket::~Socket() {
    if (sock_) mnl_socket_close(sock_);
}

Socket Socket::open_route() {
    mnl_socket* raw = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
    if (!raw) throw_last_errno("opening a NETLINK_ROUTE socket");
    Socket sock(raw);
    int one = 1;
    if (mnl_socket_setsockopt(raw, NETLINK_EXT_ACK, &one, sizeof one) != 0)
        throw_last_errno("netlink socket: setting NETLINK_EXT_ACK");
    if (mnl_socket_setsockopt(raw, NETLINK_CAP_ACK, &one, sizeof one) != 0)
        throw_last_errno("netlink socket: setting NETLINK_CAP_ACK");
    set_buffer(sock.fd(), SO_RCVBUFFORCE, SO_RCVBUF, kReceiveBufferSize);
    set_buffer(sock.fd(), SO_SNDBUFFORCE, SO_SNDBUF, kSendBufferSize);
    if (mnl_socket_bind(raw, 0, MNL_SOCKET_AUTOPID) != 0) throw_last_errno("netlink socket: bind");
    return sock;
}

std::uint32_t Socket::portid() const { return mnl_socket_get_portid(sock_); }
int Socket::fd() const { return mnl_socket_get_fd(sock_); }

std::uint32_t Socket::next_seq() noexcept {
    if (++seq_ == 0) ++seq_;
    return seq_;
}

// --- Message -----------------------------------------------------------------------

Message::Message(std::uint16_t type, std::uint16_t flags) : buf_(256, 0) {
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf_.data());
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = static_cast<std::uint16_t>(flags | NLM_F_REQUEST);
}

void Message::reserve_more(std::size_t extra) {
    const std::size_t need = size() + MNL_ALIGN(extra);
    if (need > UINT32_MAX) throw std::length_error("netlink message too large");
    // resize() zero-fills, so padding bytes are always zero.
    if (need > buf_.size()) buf_.resize(std::max(need, buf_.size() * 2), 0);
}

void* Message::family_header(std::size_t size) {
    if (family_header_size_ == 0) {
        if (this->size() != MNL_NLMSG_HDRLEN)
            throw std::logic_error("netlink message: family header requested after attributes");
        reserve_more(size);
        family_header_size_ = size;
        return mnl_nlmsg_put_extra_header(hdr(), size);
    }
    if (size != family_header_size_) throw std::logic_error("netlink message: family header size mismatch");
    return buf_.data() + MNL_NLMSG_HDRLEN;
}

void Message::put_bytes(std::uint16_t type, const void* data, std::size_t len) {
    if (len > UINT16_MAX - MNL_ATTR_HDRLEN) throw std::length_error("netlink attribute too large");
    reserve_more(MNL_ATTR_HDRLEN + len);
    static const std::uint8_t none = 0;
    mnl_attr_put(hdr(), type, len, len ? data : &none);
}

void Message::put_strz(std::uint16_t type, std::string_view s) {
    std::string z(s);
    put_bytes(type, z.c_str(), z.size() + 1);
}

void Message::put_raw(const void* data, std::size_t len) {
    reserve_more(len);
    void* dst = mnl_nlmsg_put_extra_header(hdr(), len);
    if (len) std::memcpy(dst, data, len);
}

Nest Message::nest(std::uint16_t type) {
    reserve_more(MNL_ATTR_HDRLEN);
    const std::size_t offset = size();
    mnl_attr_nest_start(hdr(), type);
    return Nest(*this, offset);
}

Nest Message::nest_plain(std::uint16_t type) {
    Nest n = nest(type);
    reinterpret_cast<nlattr*>(buf_.data() + (size() - MNL_ATTR_HDRLEN))->nla_type = type;
    return n;
}

void Nest::end() noexcept {
    if (!msg_ || msg_->buf_.empty()) return;  // moved-from message: nothing to close
    auto* start = reinterpret_cast<nlattr*>(msg_->buf_.data() + offset_);
    mnl_attr_nest_end(msg_->hdr(), start);
    msg_ = nullptr;
}

// --- Batch -------------------------------------------------------------------------

void Batch::add(Message&& msg, std::string context) { entries_.push_back(Entry{std::move(msg), std::move(context)}); }

std::vector<Result> Batch::run(Socket& sock) const {
    std::vector<Result> results(entries_.size());
    std::vector<bool> ack_lost(entries_.size(), false);
    std::vector<std::uint8_t> out;
    out.reserve(kBatchBufferSize);
    std::vector<std::uint8_t> in;
    std::unordered_map<std::uint32_t, std::size_t> pending;  // seq -> index

    auto flush = [&] {
        if (out.empty()) return;
        send_all(sock, out.data(), out.size());
        out.clear();
        bool overrun = false;
        while (!pending.empty()) {
            // Non-blocking first: the acks are normally queued already.
            ssize_t n = receive(sock, in, 0);
            if (n == 0 && !overrun) n = receive(sock, in, kAckTimeoutMs);
            if (n == -ENOBUFS) {
                overrun = true;
                continue;
            }
            if (n == 0) {
                for (const auto& [seq, index] : pending) {
                    results[index].error = overrun ? ENOBUFS : ETIMEDOUT;
                    results[index].kernel_message = overrun
                        ? "acknowledgement lost (netlink receive buffer overrun); outcome unknown"
                        : "no acknowledgement from the kernel";
                    ack_lost[index] = true;
                }
                pending.clear();
                break;
            }
            int len = static_cast<int>(n);
            for (auto* nlh = reinterpret_cast<const nlmsghdr*>(in.data()); mnl_nlmsg_ok(nlh, len);
                 nlh = mnl_nlmsg_next(nlh, &len)) {
                if (nlh->nlmsg_type != NLMSG_ERROR || nlh->nlmsg_pid != sock.portid()) continue;
                auto it = pending.find(nlh->nlmsg_seq);
                if (it == pending.end()) continue;  // an ack of an earlier, abandoned request
                results[it->second].error = ack_error(nlh);
                results[it->second].kernel_message = extack_text(nlh);
                pending.erase(it);
            }
        }
    };

    auto send_some = [&](const std::vector<std::size_t>& which) {
        for (std::size_t i : which) {
            const auto& entry = entries_[i];
            results[i] = Result{0, {}, entry.context};
            if (int fault = detail::injected_fault()) {
                results[i].error = fault;
                results[i].kernel_message = kInjected;
                continue;
            }
            const std::size_t len = entry.msg.size();
            if (!out.empty() && out.size() + len > kBatchBufferSize) flush();
            const std::size_t at = out.size();
            out.insert(out.end(), reinterpret_cast<const std::uint8_t*>(entry.msg.hdr()),
                       reinterpret_cast<const std::uint8_t*>(entry.msg.hdr()) + len);
            auto* nlh = reinterpret_cast<nlmsghdr*>(out.data() + at);
            nlh->nlmsg_flags |= NLM_F_ACK;
            nlh->nlmsg_seq = sock.next_seq();
            nlh->nlmsg_pid = 0;
            pending.emplace(nlh->nlmsg_seq, i);
        }
        flush();
    };

    std::vector<std::size_t> todo(entries_.size());
    for (std::size_t i = 0; i < todo.size(); ++i) todo[i] = i;
    for (int attempt = 0;; ++attempt) {
        send_some(todo);
        // Only requests the kernel answered with a transient error are sent again: a
        // lost ack says nothing about whether the request was applied.
        std::vector<std::size_t> again;
        for (std::size_t i : todo)
            if (is_transient(results[i].error) && !ack_lost[i]) again.push_back(i);
        if (again.empty() || attempt + 1 >= kTransientAttempts) break;
        std::this_thread::sleep_for(kTransientBackoff * (1 << attempt));
        retried_requests += again.size();
        todo = std::move(again);
    }
    return results;
}

void Batch::run_or_throw(Socket& sock) const {
    for (auto& r : run(sock))
        if (r.error) throw KernelError(r.error, r.context, r.kernel_message);
}

void request(Socket& sock, Message& msg, const std::string& context) {
    query(
        sock, msg, [](const nlmsghdr*) {}, context);
}

void query(Socket& sock, Message& msg, const std::function<void(const nlmsghdr*)>& each, const std::string& context) {
    for (int attempt = 0;; ++attempt) {
        try {
            query_once(sock, msg, each, context);
            return;
        } catch (const KernelError& e) {
            if (!is_transient(e.errno_value()) || attempt + 1 >= kTransientAttempts) throw;
        }
        std::this_thread::sleep_for(kTransientBackoff * (1 << attempt));
        ++retried_requests;
    }
}

namespace {

void query_once(Socket& sock, Message& msg, const std::function<void(const nlmsghdr*)>& each,
                const std::string& context) {
    if (int fault = detail::injected_fault()) throw KernelError(fault, context, kInjected);
    nlmsghdr* out = msg.hdr();
    out->nlmsg_flags |= NLM_F_ACK;
    out->nlmsg_seq = sock.next_seq();
    out->nlmsg_pid = 0;
    const std::uint32_t seq = out->nlmsg_seq;
    send_all(sock, out, out->nlmsg_len);
    std::vector<std::uint8_t> in;
    for (;;) {
        const ssize_t n = receive(sock, in, kAckTimeoutMs);
        if (n == -ENOBUFS) continue;  // the ack may still be queued behind the loss
        if (n == 0) throw KernelError(ETIMEDOUT, context, "no acknowledgement from the kernel");
        int len = static_cast<int>(n);
        for (auto* nlh = reinterpret_cast<const nlmsghdr*>(in.data()); mnl_nlmsg_ok(nlh, len);
             nlh = mnl_nlmsg_next(nlh, &len)) {
            if (nlh->nlmsg_seq != seq || nlh->nlmsg_pid != sock.portid()) continue;
            if (nlh->nlmsg_type == NLMSG_ERROR) {
                if (int err = ack_error(nlh)) throw KernelError(err, context, extack_text(nlh));
                return;
            }
            if (nlh->nlmsg_type >= NLMSG_MIN_TYPE) each(nlh);
        }
    }
}

}  // namespace

void dump(Socket& sock, Message& msg, const std::function<void(const nlmsghdr*)>& each, const std::string& context) {
    nlmsghdr* out = msg.hdr();
    out->nlmsg_flags |= NLM_F_DUMP;
    out->nlmsg_pid = 0;
    for (int attempt = 0; attempt < kDumpAttempts; ++attempt) {
        const std::uint32_t seq = out->nlmsg_seq = sock.next_seq();
        send_all(sock, out, out->nlmsg_len);
        std::vector<std::vector<std::uint8_t>> parts;
        bool interrupted = false;
        bool done = false;
        // One receive buffer per thread, zero-filled once: observing a lab dumps three
        // tables in each of its namespaces, and a fresh 64 KiB buffer per datagram was a
        // tenth of that work. Only the bytes received are kept.
        thread_local std::vector<std::uint8_t> in;
        while (!done) {
            const ssize_t n = receive(sock, in, -1);
            if (n == -ENOBUFS) {
                // Parts of the dump may be lost: finish this one, then dump again.
                interrupted = true;
                continue;
            }
            int len = static_cast<int>(n);
            bool ours = false;
            for (auto* nlh = reinterpret_cast<nlmsghdr*>(in.data()); mnl_nlmsg_ok(nlh, len);
                 nlh = mnl_nlmsg_next(nlh, &len)) {
                if (nlh->nlmsg_seq != seq || nlh->nlmsg_pid != sock.portid()) continue;
                if (!ours && detail::injected_dump_interrupt()) nlh->nlmsg_flags |= NLM_F_DUMP_INTR;
                ours = true;
                if (nlh->nlmsg_flags & NLM_F_DUMP_INTR) interrupted = true;
                if (nlh->nlmsg_type == NLMSG_ERROR) {
                    const int err = ack_error(nlh);
                    throw KernelError(err ? err : EPROTO, context, extack_text(nlh));
                }
                if (nlh->nlmsg_type == NLMSG_DONE) {
                    // NLMSG_DONE carries the dump's own error as an int.
                    if (mnl_nlmsg_get_payload_len(nlh) >= sizeof(int)) {
                        const int err = -*static_cast<const int*>(mnl_nlmsg_get_payload(nlh));
                        if (err) throw KernelError(err, context, extack_text(nlh));
                    }
                    done = true;
                }
            }
            if (ours) parts.emplace_back(in.begin(), in.begin() + n);
        }
        if (interrupted) {
            ++restarted_dumps;
            continue;
        }
        for (const auto& part : parts) {
            int len = static_cast<int>(part.size());
            for (auto* nlh = reinterpret_cast<const nlmsghdr*>(part.data()); mnl_nlmsg_ok(nlh, len);
                 nlh = mnl_nlmsg_next(nlh, &len)) {
                if (nlh->nlmsg_seq == seq && nlh->nlmsg_type >= NLMSG_MIN_TYPE) each(nlh);
            }
        }
        return;
    }
    throw KernelError(EAGAIN, context, "dump kept changing while being read");
}

// --- parsing -----------------------------------------------------------------------

namespace {
struct Table {
    std::vector<const nlattr*>* out;
    std::uint16_t max;
};
int collect(const nlattr* attr, void* data) {
    auto* t = static_cast<Table*>(data);
    const auto type = mnl_attr_get_type(attr);
    if (type <= t->max) (*t->out)[type] = attr;
    return MNL_CB_OK;
}
}  // namespace

std::vector<const nlattr*> parse_attrs(const nlmsghdr* nlh, std::size_t family_header_size, std::uint16_t max_type) {
    std::vector<const nlattr*> out(max_type + 1u, nullptr);
    Table t{&out, max_type};
    mnl_attr_parse(nlh, static_cast<unsigned>(family_header_size), collect, &t);
    return out;
}

std::vector<const nlattr*> parse_nested(const nlattr* nest, std::uint16_t max_type) {
    std::vector<const nlattr*> out(max_type + 1u, nullptr);
    Table t{&out, max_type};
    mnl_attr_parse_nested(nest, collect, &t);
    return out;
}

std::uint64_t dump_restarts() { return restarted_dumps.load(); }
std::uint64_t request_retries() { return retried_requests.load(); }

}  // namespace labctl::nl
