// Reading echo replies and ICMP errors, and matching them to probes (run.hpp; the design
// is at the top of ping.cpp).

#include "ping/ping.hpp"

#include <linux/errqueue.h>
#include <net/if.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <exception>
#include <map>
#include <queue>
#include <random>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <unordered_map>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "ping/icmp.hpp"
#include "ping/run.hpp"

namespace labctl::ping::detail {

void PingRun::read_replies(Socket& s) {
    std::array<std::uint8_t, 4096> buffer;
    alignas(cmsghdr) std::array<char, 256> control;
    for (int i = 0; i < kReadBatch; ++i) {
        sockaddr_storage from{};
        iovec iov{buffer.data(), buffer.size()};
        msghdr msg{};
        msg.msg_name = &from;
        msg.msg_namelen = sizeof from;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        ssize_t n = ::recvmsg(s.fd.get(), &msg, MSG_DONTWAIT);
        const auto now = Clock::now();
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            // EINTR, or sk_err copied from an ICMP error (IP_RECVERR) and cleared by being
            // returned: the error itself waits on the error queue.
            continue;
        }

        std::span<const std::uint8_t> message(buffer.data(), std::min<std::size_t>(n, buffer.size()));
        int ttl = -1;
        if (s.family == AF_INET) {
            auto packet = parse_ipv4(message);
            if (!packet) continue;
            ttl = packet->ttl;
            message = packet->payload;
        } else {
            for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
                if (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_HOPLIMIT)
                    std::memcpy(&ttl, CMSG_DATA(c), sizeof ttl);
        }
        auto header = parse_icmp_header(message);
        if (!header || !is_echo_reply(s.family, header->type) || header->code != 0) continue;
        auto it = s.probe_by_id.find(header->id);
        if (it == s.probe_by_id.end()) continue;
        const std::size_t p = it->second;
        ProbeState& st = states_[p];
        const int seq = header->seq;
        if (st.done || st.waiting_retry || seq <= st.seq_base || seq >= st.next_seq) continue;
        if (!same_address(address_of(from), probes_[p].destination)) continue;
        const auto expected = echo_payload(token_, static_cast<std::uint32_t>(p), header->seq);
        auto body = message.subspan(kIcmpHeaderSize);
        if (!std::equal(body.begin(), body.end(), expected.begin(), expected.end())) continue;
        const int nth = seq - st.seq_base;
        if (st.answered[nth - 1]) continue;  // a duplicate (ping's "DUP!") is not counted
        st.answered[nth - 1] = true;

        Reply reply{seq, std::chrono::duration<double, std::milli>(now - st.sent_at[nth - 1]).count(), ttl};
        ProbeResult& r = results_[p];
        r.replies.push_back(reply);
        ++r.received;
        if (on_reply_) on_reply_(p, reply);
        if (probes_[p].stop_at_first_reply || r.received == probes_[p].count) finish(p, false, {});
    }
}

void PingRun::read_errors(Socket& s) {
    std::array<std::uint8_t, 2048> buffer;
    alignas(cmsghdr) std::array<char, 512> control;
    for (int i = 0; i < kReadBatch; ++i) {
        sockaddr_storage original_destination{};
        iovec iov{buffer.data(), buffer.size()};
        msghdr msg{};
        msg.msg_name = &original_destination;
        msg.msg_namelen = sizeof original_destination;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        ssize_t n = ::recvmsg(s.fd.get(), &msg, MSG_ERRQUEUE | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            break;  // EAGAIN: the queue is empty
        }
        const sock_extended_err* error = nullptr;
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
            if ((c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) ||
                (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR))
                error = reinterpret_cast<const sock_extended_err*>(CMSG_DATA(c));
        // Local errors (EMSGSIZE...) carry no request to match; sendto() reported them.
        if (!error || (error->ee_origin != SO_EE_ORIGIN_ICMP && error->ee_origin != SO_EE_ORIGIN_ICMP6)) continue;
        if (!is_fatal_error(s.family, error->ee_type, error->ee_code)) continue;

        // The data is the request the error quotes, from its ICMP header on.
        std::span<const std::uint8_t> quoted(buffer.data(), std::min<std::size_t>(n, buffer.size()));
        auto header = parse_icmp_header(quoted);
        if (!header || !is_echo_request(s.family, header->type)) continue;
        const auto& by_id = namespaces_[s.netns].probe_by_id[family_slot(s.family)];
        auto it = by_id.find(header->id);
        if (it == by_id.end()) continue;
        const std::size_t p = it->second;
        const ProbeState& st = states_[p];
        if (st.done || st.waiting_retry || header->seq <= st.seq_base || header->seq >= st.next_seq) continue;
        if (!same_address(address_of(original_destination), probes_[p].destination)) continue;
        // Routers quote at least 8 bytes past the IP header; Linux quotes much more. Check
        // the payload's key when it is there.
        auto body = quoted.subspan(kIcmpHeaderSize);
        if (body.size() >= kPayloadKeySize) {
            const auto expected = echo_payload(token_, static_cast<std::uint32_t>(p), header->seq);
            if (!std::equal(expected.begin(), expected.begin() + kPayloadKeySize, body.begin())) continue;
        }

        std::string reason = describe_icmp_error(s.family, error->ee_type, error->ee_code);
        IpAddress offender = address_of(SO_EE_OFFENDER(error));
        if (offender.family == s.family) reason += " from " + offender.to_string();
        finish(p, true, std::move(reason));
    }
    // The queue is drained; clear the sk_err copy too, or EPOLLERR would keep firing.
    int pending = 0;
    socklen_t size = sizeof pending;
    ::getsockopt(s.fd.get(), SOL_SOCKET, SO_ERROR, &pending, &size);
}

}  // namespace labctl::ping::detail
