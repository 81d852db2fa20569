#include "capture/capture.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <queue>

#include "netns/netns.hpp"

namespace labctl::capture {

namespace {

// Room for a socket's backlog while the writer is busy: the kernel doubles it. Raised
// past rmem_max with SO_RCVBUFFORCE (we have CAP_NET_ADMIN), else as far as allowed.
constexpr int kReceiveBuffer = 4 << 20;
// Packets read from one socket before turning to the others, so that a flood on one
// interface cannot starve the rest.
constexpr int kReadBurst = 256;
constexpr std::chrono::milliseconds kIdleWait{100};

std::uint64_t realtime_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

struct Packet {
    std::uint64_t ts_ns = 0;
    std::uint64_t seq = 0;  // read order: keeps one socket's packets in order on equal stamps
    std::uint32_t source = 0;
    std::uint32_t original_length = 0;
    pcapng::Direction direction = pcapng::Direction::unknown;
    std::vector<std::uint8_t> data;
};

struct Later {
    bool operator()(const Packet* a, const Packet* b) const {
        return a->ts_ns != b->ts_ns ? a->ts_ns > b->ts_ns : a->seq > b->seq;
    }
};

// Writes all of `bytes` to fd. False when the reader went away (EPIPE); throws
// KernelError for any other failure.
bool write_all(int fd, const std::vector<std::uint8_t>& bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EPIPE) return false;
            throw_last_errno("capture: writing the pcapng output");
        }
        done += static_cast<std::size_t>(n);
    }
    return true;
}

// The kernel stamps received packets only while some socket wants timestamps, and turns
// that on later (from a workqueue) when the first one asks. Until then a packet socket's
// packets are stamped when read: out of time order. Proof that stamping is on: a datagram
// sent to ourselves over loopback carries a stamp from before we read it. Gives up after
// a second (the packets' order may then be off at the very start) without failing.
void wait_for_receive_timestamps() {
    UniqueFd probe(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!probe) return;
    int on = 1;
    sockaddr_in self{};
    self.sin_family = AF_INET;
    self.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof self;
    if (::setsockopt(probe.get(), SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) != 0 ||
        ::bind(probe.get(), reinterpret_cast<sockaddr*>(&self), sizeof self) != 0 ||
        ::getsockname(probe.get(), reinterpret_cast<sockaddr*>(&self), &len) != 0)
        return;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (std::chrono::steady_clock::now() < deadline) {
        char byte = 0;
        if (::sendto(probe.get(), &byte, 1, 0, reinterpret_cast<sockaddr*>(&self), sizeof self) != 1) return;
        // Loopback delivers within sendto(): the datagram is queued by now.
        const std::uint64_t queued_by = realtime_ns();
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec))];
        iovec iov{&byte, 1};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        if (::recvmsg(probe.get(), &msg, MSG_DONTWAIT) != 1) return;
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_TIMESTAMPNS) continue;
            timespec ts{};
            std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
            const auto stamp =
                static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<std::uint64_t>(ts.tv_nsec);
            if (stamp < queued_by) return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

}  // namespace

std::uint64_t Stats::captured() const {
    std::uint64_t n = 0;
    for (const auto& i : interfaces) n += i.captured;
    return n;
}
std::uint64_t Stats::received() const {
    std::uint64_t n = 0;
    for (const auto& i : interfaces) n += i.received;
    return n;
}
std::uint64_t Stats::kernel_drops() const {
    std::uint64_t n = 0;
    for (const auto& i : interfaces) n += i.kernel_drops;
    return n;
}

struct Capture::Impl {
    struct Source {
        Target target;
        UniqueFd fd;
        int ifindex = 0;
        std::uint16_t linktype = 0;
        std::uint64_t captured = 0;
    };
    std::vector<Target> targets;
    std::vector<Source> sources;
    Options options;
    std::uint64_t start_ns = 0;
};

Capture::Capture(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Capture::Capture(Capture&&) noexcept = default;
Capture& Capture::operator=(Capture&&) noexcept = default;
Capture::~Capture() = default;

const std::vector<Target>& Capture::targets() const { return impl_->targets; }

Capture Capture::open(const std::vector<Target>& targets, const Options& options) {
    if (targets.empty()) throw RequestError("nothing to capture: name at least one NODE:IFNAME");
    auto impl = std::make_unique<Impl>();
    impl->targets = targets;
    impl->options = options;
    impl->sources.resize(targets.size());

    // One handle per namespace, the sockets made on one thread that visits each.
    std::map<std::string, netns::NetnsHandle> handles;
    for (const auto& t : targets)
        if (!handles.count(t.netns)) handles.emplace(t.netns, netns::open(t.netns));
    std::vector<const netns::NetnsHandle*> order;
    for (const auto& t : targets) order.push_back(&handles.at(t.netns));
    netns::run_in_each(order, [&](std::size_t i) {
        // Protocol 0: the socket receives nothing until bind() names ETH_P_ALL.
        int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) throw_last_errno(targets[i].label + ": opening a packet socket");
        impl->sources[i].fd = UniqueFd(fd);
    });

    for (std::size_t i = 0; i < targets.size(); ++i) {
        Impl::Source& s = impl->sources[i];
        s.target = targets[i];
        const std::string& label = targets[i].label;
        if (targets[i].ifname.empty() || targets[i].ifname.size() >= IFNAMSIZ)
            throw RequestError(label + ": no such interface");
        ifreq ifr{};
        std::memcpy(ifr.ifr_name, targets[i].ifname.data(), targets[i].ifname.size());
        if (::ioctl(s.fd.get(), SIOCGIFINDEX, &ifr) != 0) {
            if (errno == ENODEV)
                throw RequestError("node " + label.substr(0, label.find(':')) + " has no interface \"" +
                                   targets[i].ifname + "\"");
            throw_last_errno(label + ": looking up the interface");
        }
        s.ifindex = ifr.ifr_ifindex;
        if (::ioctl(s.fd.get(), SIOCGIFHWADDR, &ifr) != 0) throw_last_errno(label + ": reading the link type");
        auto linktype = linktype_of_arphrd(ifr.ifr_hwaddr.sa_family);
        if (!linktype)
            throw RequestError(label + ": cannot capture on device type ARPHRD " +
                               std::to_string(ifr.ifr_hwaddr.sa_family) + " (Ethernet and raw IP only)");
        s.linktype = *linktype;
    }

    // Every filter compiles (once per link type) before any socket is bound.
    if (!options.filter.empty()) {
        std::map<std::uint16_t, std::vector<sock_filter>> programs;
        for (auto& s : impl->sources) {
            auto it = programs.find(s.linktype);
            if (it == programs.end())
                it = programs.emplace(s.linktype, compile_filter(options.filter, s.linktype)).first;
            sock_fprog prog{static_cast<unsigned short>(it->second.size()), it->second.data()};
            if (::setsockopt(s.fd.get(), SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0)
                throw_last_errno(s.target.label + ": attaching the filter");
        }
    }
    for (auto& s : impl->sources) {
        const std::string& label = s.target.label;
        int on = 1;
        if (::setsockopt(s.fd.get(), SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) != 0)
            throw_last_errno(label + ": asking for timestamps (SO_TIMESTAMPNS)");
        int size = kReceiveBuffer;
        if (::setsockopt(s.fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0 &&
            ::setsockopt(s.fd.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size) != 0)
            throw_last_errno(label + ": sizing the receive buffer");
    }
    wait_for_receive_timestamps();
    impl->start_ns = realtime_ns();
    for (auto& s : impl->sources) {
        // Promiscuous while the socket lives (the kernel counts and undoes it when the
        // socket closes), as tcpdump does: a bridge shows the frames it forwards between
        // its ports only so.
        packet_mreq mreq{};
        mreq.mr_ifindex = s.ifindex;
        mreq.mr_type = PACKET_MR_PROMISC;
        if (::setsockopt(s.fd.get(), SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq, sizeof mreq) != 0)
            throw_last_errno(s.target.label + ": entering promiscuous mode");
        sockaddr_ll addr{};
        addr.sll_family = AF_PACKET;
        addr.sll_protocol = htons(ETH_P_ALL);
        addr.sll_ifindex = s.ifindex;
        if (::bind(s.fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
            throw_last_errno(s.target.label + ": binding the packet socket");
    }
    return Capture(std::move(impl));
}

Stats Capture::run(int out, const std::atomic<bool>& stop) {
    auto& sources = impl_->sources;
    const auto& options = impl_->options;

    UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll) throw_last_errno("capture: epoll_create1");
    for (std::uint32_t i = 0; i < sources.size(); ++i) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u32 = i;
        if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, sources[i].fd.get(), &ev) != 0)
            throw_last_errno(sources[i].target.label + ": epoll_ctl");
    }

    // A pipe whose reader went away reports EPOLLERR on our end: stop then, not at the
    // next write (which may never come on a quiet lab). Files cannot be watched (EPERM).
    constexpr std::uint32_t kOutput = UINT32_MAX;
    epoll_event out_ev{};
    out_ev.events = 0;  // EPOLLERR and EPOLLHUP are always reported
    out_ev.data.u32 = kOutput;
    ::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, out, &out_ev);

    std::vector<std::uint8_t> buffer;
    buffer.reserve(1 << 16);
    pcapng::append_section_header(buffer, std::string("labctl ") + LABCTL_VERSION);
    for (const auto& s : sources)
        pcapng::append_interface(buffer, s.linktype, kSnapLen, s.target.label, s.target.netns + " " + s.target.ifname);
    bool reader_gone = !write_all(out, buffer);
    buffer.clear();

    std::priority_queue<Packet*, std::vector<Packet*>, Later> pending;
    std::vector<std::unique_ptr<Packet>> free_list;
    std::uint64_t seq = 0, written = 0, last_written_ns = 0, out_of_order = 0;
    std::vector<std::uint8_t> frame(kSnapLen);
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec))];

    auto take = [&](std::unique_ptr<Packet> p) { free_list.push_back(std::move(p)); };
    // Reads up to `limit` packets from source i; false once it would block.
    auto read_from = [&](std::uint32_t i, int limit) {
        for (int n = 0; n < limit; ++n) {
            sockaddr_ll from{};
            iovec iov{frame.data(), frame.size()};
            msghdr msg{};
            msg.msg_name = &from;
            msg.msg_namelen = sizeof from;
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control;
            msg.msg_controllen = sizeof control;
            ssize_t len = ::recvmsg(sources[i].fd.get(), &msg, MSG_TRUNC | MSG_DONTWAIT);
            if (len < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
                if (errno == EINTR) continue;
                // The interface went away (a node stopped, a lab taken down): it has
                // nothing more to give.
                if (errno == ENETDOWN || errno == ENXIO || errno == ENODEV) return false;
                throw_last_errno(sources[i].target.label + ": reading packets");
            }
            std::unique_ptr<Packet> p;
            if (!free_list.empty()) {
                p = std::move(free_list.back());
                free_list.pop_back();
            } else {
                p = std::make_unique<Packet>();
            }
            std::size_t caplen = std::min<std::size_t>(static_cast<std::size_t>(len), frame.size());
            p->data.assign(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(caplen));
            p->original_length = static_cast<std::uint32_t>(len);
            p->source = i;
            p->seq = seq++;
            p->direction =
                from.sll_pkttype == PACKET_OUTGOING ? pcapng::Direction::outbound : pcapng::Direction::inbound;
            p->ts_ns = 0;
            for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                    timespec ts{};
                    std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
                    p->ts_ns =
                        static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<std::uint64_t>(ts.tv_nsec);
                }
            }
            if (p->ts_ns == 0) p->ts_ns = realtime_ns();
            pending.push(p.release());
        }
        return true;
    };
    auto limit_reached = [&] { return options.count != 0 && written >= options.count; };
    // Writes, in time order, the pending packets stamped at or before `until`.
    auto emit_until = [&](std::uint64_t until) {
        while (!pending.empty() && pending.top()->ts_ns <= until && !limit_reached()) {
            std::unique_ptr<Packet> p(pending.top());
            pending.pop();
            // Stamped before one already written: it reached its socket later than the
            // hold-back allows (a starved CPU). Written anyway, and counted.
            if (p->ts_ns < last_written_ns) ++out_of_order;
            last_written_ns = std::max(last_written_ns, p->ts_ns);
            pcapng::append_packet(buffer, p->source, p->ts_ns, p->data, p->original_length, p->direction);
            ++sources[p->source].captured;
            ++written;
            take(std::move(p));
        }
        if (!buffer.empty() && !reader_gone) reader_gone = !write_all(out, buffer);
        buffer.clear();
    };
    auto free_pending = [&] {
        while (!pending.empty()) {
            delete pending.top();
            pending.pop();
        }
    };

    const bool timed = options.duration.has_value();
    const auto deadline = std::chrono::steady_clock::now() + options.duration.value_or(std::chrono::milliseconds(0));
    std::vector<epoll_event> events(std::min<std::size_t>(sources.size() + 1, 256));
    try {
        while (!stop.load() && !reader_gone && !limit_reached()) {
            auto now = std::chrono::steady_clock::now();
            if (timed && now >= deadline) break;
            auto wait = pending.empty() ? kIdleWait : kHoldBack;
            if (timed) wait = std::min(wait, std::chrono::ceil<std::chrono::milliseconds>(deadline - now));
            int n = ::epoll_wait(epoll.get(), events.data(), static_cast<int>(events.size()),
                                 static_cast<int>(wait.count()));
            if (n < 0 && errno != EINTR) throw_last_errno("capture: epoll_wait");
            const std::uint64_t round = realtime_ns();
            for (int k = 0; k < n; ++k) {
                const auto& ev = events[static_cast<std::size_t>(k)];
                if (ev.data.u32 == kOutput) reader_gone = true;
                else read_from(ev.data.u32, kReadBurst);
            }
            const std::uint64_t hold =
                static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(kHoldBack).count());
            emit_until(round > hold ? round - hold : 0);
        }
        // What the sockets hold now was captured before the stop: drain, then write all
        // (in order, up to the count).
        if (!reader_gone && !limit_reached()) {
            for (std::uint32_t i = 0; i < sources.size(); ++i)
                while (read_from(i, kReadBurst)) {}
            emit_until(UINT64_MAX);
        }
    } catch (...) {
        free_pending();
        throw;
    }
    free_pending();

    Stats stats;
    stats.reader_gone = reader_gone;
    stats.out_of_order = out_of_order;
    const std::uint64_t end_ns = realtime_ns();
    for (std::uint32_t i = 0; i < sources.size(); ++i) {
        tpacket_stats st{};
        socklen_t len = sizeof st;
        InterfaceStats is{sources[i].target.label, sources[i].captured, 0, 0};
        if (::getsockopt(sources[i].fd.get(), SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) {
            is.received = st.tp_packets;
            is.kernel_drops = st.tp_drops;
        }
        stats.interfaces.push_back(is);
        pcapng::append_statistics(buffer, i, {impl_->start_ns, end_ns, is.received, is.kernel_drops, is.captured});
    }
    if (!reader_gone) stats.reader_gone = !write_all(out, buffer);
    return stats;
}

Background::Background(Capture capture, UniqueFd out) : capture_(std::move(capture)), out_(std::move(out)) {
    thread_ = std::thread([this] {
        try {
            stats_ = capture_.run(out_.get(), stop_);
        } catch (...) {
            failure_ = std::current_exception();
        }
        std::lock_guard lock(mutex_);
        done_ = true;
        finished_.notify_all();
    });
}

Background::~Background() {
    try {
        stop();
    } catch (...) {
        // stop() was the place to see it.
    }
}

bool Background::wait(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return finished_.wait_for(lock, timeout, [&] { return done_; });
}

Stats Background::stop() {
    if (!joined_) {
        stop_.store(true);
        thread_.join();
        joined_ = true;
        out_.reset();
    }
    if (failure_) std::rethrow_exception(failure_);
    return stats_;
}

}  // namespace labctl::capture
