// BPF filters compiled by libpcap for a link type, without a capture handle of its own
// (pcap_open_dead): the program runs in the kernel on our AF_PACKET socket
// (SO_ATTACH_FILTER), as libpcap's own Linux capture attaches it.
#include <linux/if_arp.h>
#include <pcap/pcap.h>

#include <memory>

#include "capture/capture.hpp"

namespace labctl::capture {

namespace {

struct PcapClose {
    void operator()(pcap_t* p) const noexcept { pcap_close(p); }
};

}  // namespace

std::vector<sock_filter> compile_filter(const std::string& expression, std::uint16_t linktype, std::uint32_t snaplen) {
    // libpcap takes a DLT_ value: for raw IP it differs from the file's LINKTYPE_ (12, not 101).
    const int dlt = linktype == kLinktypeRaw ? DLT_RAW : linktype;
    std::unique_ptr<pcap_t, PcapClose> dead(pcap_open_dead(dlt, static_cast<int>(snaplen)));
    if (!dead)
        throw RequestError("filter \"" + expression + "\": libpcap cannot compile for link type " +
                           std::to_string(linktype));
    bpf_program program{};
    if (pcap_compile(dead.get(), &program, expression.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0)
        throw RequestError("filter \"" + expression + "\": " + pcap_geterr(dead.get()));
    // struct bpf_insn and struct sock_filter are the same four fields (code, jt, jf, k).
    std::vector<sock_filter> out;
    out.reserve(program.bf_len);
    for (unsigned i = 0; i < program.bf_len; ++i) {
        const bpf_insn& in = program.bf_insns[i];
        out.push_back(sock_filter{in.code, in.jt, in.jf, in.k});
    }
    pcap_freecode(&program);
    return out;
}

std::optional<std::uint16_t> linktype_of_arphrd(std::uint16_t arphrd) {
    switch (arphrd) {
        case ARPHRD_ETHER:
        case ARPHRD_LOOPBACK:  // Linux's lo carries an Ethernet header of zeros
            return kLinktypeEthernet;
        case ARPHRD_NONE:  // TUN, WireGuard: bare IPv4/IPv6
        case ARPHRD_RAWIP: return kLinktypeRaw;
        default: return std::nullopt;
    }
}

}  // namespace labctl::capture
