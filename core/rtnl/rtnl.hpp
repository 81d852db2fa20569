#pragma once
// Route-netlink operations: a handle per namespace, request builders that return an
// nl::Message (add them to an nl::Batch and send a namespace's whole work at once),
// dumps, TUN/TAP ioctls and sysctls.
//
// Builders never talk to the kernel. They throw std::invalid_argument for a spec the
// kernel would misread (see each), nothing else but std::bad_alloc. Interface indexes
// and namespace fds in a request refer to the namespace of the socket the request is
// sent on, unless the request names another namespace by fd.

#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/ip.hpp"
#include "base/unique_fd.hpp"
#include "netns/netns.hpp"
#include "nl/nl.hpp"

namespace labctl::rtnl {

using Mac = std::array<std::uint8_t, 6>;

// A netlink socket opened inside one namespace, used for everything done there.
class Handle {
public:
    explicit Handle(nl::Socket socket) : socket_(std::move(socket)) {}
    // Opens the socket on a thread inside `ns` (netns::run_in). Throws KernelError.
    static Handle open_in(const netns::NetnsHandle& ns);
    // Opens the socket in the calling thread's namespace. Throws KernelError.
    static Handle open_here();
    // One handle per namespace, all opened from ONE thread that setns()'s into each in
    // turn (cheaper than a thread per namespace). Throws KernelError.
    static std::vector<Handle> open_in_each(const std::vector<const netns::NetnsHandle*>& namespaces);

    nl::Socket& socket() noexcept { return socket_; }

private:
    nl::Socket socket_;
};

// Settings every link kind shares. Unset means the kernel's default.
struct LinkCommon {
    std::string name;  // 1..15 bytes, no '/', ':', '%', whitespace
    int ifindex = 0;   // 0: the kernel picks
    std::optional<Mac> mac;
    std::optional<std::uint32_t> mtu;
    bool up = false;
    int master_ifindex = 0;  // 0: none
};

// Throws std::invalid_argument unless `name` is a usable interface name: 1..15 bytes,
// not "." or "..", no '/', ':', '%' (the kernel expands "%d"), whitespace or NUL.
void check_ifname(const std::string& name);

// --- links -------------------------------------------------------------------------

// A veth pair in ONE request. Each end goes to the namespace whose fd is given
// (-1: the namespace of the socket the request is sent on), so it may be sent from a
// third namespace.
// = ip link add A [index I] [address M] [mtu N] [master B] [up] netns NSA type veth
//       peer name PB [index J] [address M2] [mtu N2] netns NSB
// Kernel fact: the peer cannot be created up (veth_open: ENOTCONN before the pair is
// complete), nor enslaved; so b.up and b.master_ifindex must be unset (else
// std::invalid_argument): bring it up afterwards with link_set.
struct VethSpec {
    LinkCommon a;
    int a_netns_fd = -1;
    LinkCommon b;
    int b_netns_fd = -1;
};
nl::Message veth_add(const VethSpec& spec);

// = ip link add NAME type bridge stp_state 0 forward_delay 0 [vlan_filtering 1]
//   [mcast_snooping 0]
// (plus index/address/mtu/master/up from `link`). STP off and no forward delay: ports
// forward at once.
nl::Message bridge_add(const LinkCommon& link, bool vlan_filtering, bool multicast_snooping = true);

// = ip link set dev IFINDEX type bridge mcast_snooping 0|1
nl::Message bridge_set_multicast_snooping(int ifindex, bool on);

// = ip link add NAME type dummy
nl::Message dummy_add(const LinkCommon& link);

// = ip link add link PARENT name NAME type vlan id ID  (802.1Q; id 1..4094, else
// std::invalid_argument)
nl::Message vlan_add(const LinkCommon& link, int parent_ifindex, std::uint16_t id);

// What link_set changes; unset fields stay as they are.
struct LinkChange {
    std::optional<bool> up;
    std::optional<std::uint32_t> mtu;
    std::optional<int> master_ifindex;  // 0 = nomaster
    std::optional<Mac> mac;
    std::optional<std::string> name;  // rename
    std::optional<int> netns_fd;      // move to that namespace
};
// = ip link set dev IFINDEX [up|down] [mtu N] [master M|nomaster] [address MAC]
//       [name NEW] [netns NS]   (RTM_NEWLINK without NLM_F_CREATE)
nl::Message link_set(int ifindex, const LinkChange& change);

// = ip link del dev IFINDEX
nl::Message link_del(int ifindex);

// = bridge vlan add dev PORT vid VID [pvid] [untagged] [self|master]
// (RTM_SETLINK, AF_BRIDGE, IFLA_AF_SPEC/IFLA_BRIDGE_VLAN_INFO). vid 1..4094.
nl::Message bridge_vlan_add(int port_ifindex, std::uint16_t vid, bool pvid, bool untagged, bool self = false);
// = bridge vlan del dev PORT vid VID [self|master]; used to drop the default vid 1.
nl::Message bridge_vlan_del(int port_ifindex, std::uint16_t vid, bool self = false);

// --- addresses and routes ------------------------------------------------------------

// = ip addr add PREFIX dev IFINDEX [brd +] [nodad]
// IFA_LOCAL and IFA_ADDRESS both the address; IPv4 gets the prefix's broadcast when
// the prefix is /30 or shorter (as `brd +`), 127.0.0.0/8 host scope (as ip does).
// nodad (IFA_F_NODAD) applies to IPv6 only: the address is usable at once instead of
// tentative for ~2 s.
nl::Message addr_add(int ifindex, const IpPrefix& prefix, bool nodad = true);
// = ip addr del PREFIX dev IFINDEX
nl::Message addr_del(int ifindex, const IpPrefix& prefix);

struct RouteSpec {
    std::optional<IpPrefix> dst;  // nullopt: default route
    int family = 0;               // AF_INET/AF_INET6; 0: taken from dst or via
    std::optional<IpAddress> via;
    int oif = 0;  // 0: the kernel finds it from via
    std::optional<std::uint32_t> metric;
};
// = ip route add {DST|default} [via GW] [dev OIF] [metric N]   (main table,
// proto boot, scope link when there is no gateway). std::invalid_argument when
// neither via nor oif is given, or the families differ.
nl::Message route_add(const RouteSpec& route);
// = ip route del {DST|default} [via GW] [dev OIF] [metric N]: unset fields match any
// route (only the destination is needed).
nl::Message route_del(const RouteSpec& route);

// --- qdiscs --------------------------------------------------------------------------

// Link impairments, egress. Unset = none.
struct Netem {
    std::optional<double> delay_ms;
    std::optional<double> jitter_ms;
    std::optional<double> loss_pct;
    std::optional<double> duplicate_pct;
    std::optional<double> reorder_pct;  // netem reorders only when there is a delay
    std::optional<double> rate_mbit;
    std::optional<std::uint32_t> limit_packets;  // netem queue; default 1000 (as tc)
};
// "tbf" when only rate_mbit is set, else "netem": the qdisc kind netem_add builds (the
// kernel feature the impairment needs: CONFIG_NET_SCH_TBF or CONFIG_NET_SCH_NETEM).
std::string impairment_qdisc_kind(const Netem& netem);
// The root qdisc for the impairments:
// = tc qdisc add dev IFINDEX root netem [limit N] [delay Dms [Jms]] [loss P%]
//       [duplicate P%] [reorder P%] [rate Rmbit]
// or, when only the rate is given,
// = tc qdisc add dev IFINDEX root tbf rate Rmbit burst B latency 50ms
// (burst: 10 ms of traffic, at least 3000 bytes). std::invalid_argument for negative
// values, percentages above 100, or nothing set.
// With `replace`: = tc qdisc replace ... (NLM_F_REPLACE): whatever root qdisc is there
// (none, netem, tbf) makes way in one request, so no packet leaves unimpaired meanwhile.
nl::Message netem_add(int ifindex, const Netem& netem, bool replace = false);
// = tc qdisc del dev IFINDEX root
nl::Message qdisc_del_root(int ifindex);

// --- TUN/TAP ---------------------------------------------------------------------------

// A persistent TUN or TAP device in `ns` (opened from a thread inside it):
// = ip tuntap add dev NAME mode tap|tun [user UID] [group GID]   (IFF_NO_PI)
// Fails with EBUSY when a device of that name exists (IFF_TUN_EXCL: never attaches to
// someone else's device). `ifindex` (0: the kernel picks) is set with TUNSETIFINDEX,
// so no lookup is needed afterwards. Throws KernelError ("tap vm1: creating
// (TUNSETIFF): ...") or std::invalid_argument for a bad name.
void tuntap_create(const netns::NetnsHandle& ns, const std::string& name, bool tap, std::optional<std::uint32_t> owner,
                   std::optional<std::uint32_t> group, int ifindex = 0);
// The same from a thread already inside the namespace.
void tuntap_create_here(const std::string& name, bool tap, std::optional<std::uint32_t> owner,
                        std::optional<std::uint32_t> group, int ifindex = 0);

// --- sysctls ---------------------------------------------------------------------------

// "net.ipv4.conf.eth0.rp_filter" -> "/proc/sys/net/ipv4/conf/eth0/rp_filter"; a '/' in
// the key becomes '.' (sysctl(8)'s way to name "eth0.10"). Throws KernelError(EINVAL)
// naming the key unless it starts with "net.", has no empty part and no "..".
std::string sysctl_path(const std::string& key);
// Writes `value` to the key in the CALLING THREAD's namespace (/proc/sys/net resolves
// against the namespace of the task that opens it). O_NOFOLLOW. Throws KernelError
// naming the key, e.g. `sysctl net.ipv4.ip_forward: writing "1": Permission denied (EACCES)`.
void sysctl_write_here(const std::string& key, const std::string& value);
// The value, without the trailing newline. Throws KernelError.
std::string sysctl_read_here(const std::string& key);

// Writes sysctls of the calling thread's namespace, like sysctl_write_here, through a
// procfs instance of its own (fsopen/fsmount, never attached to any mount tree) that it
// replaces every kRenewAfter writes; through /proc when the kernel refuses one (a
// rootless process does not own the PID namespace procfs belongs to).
// Kernel fact (bench/observations.md): every namespace's /proc/sys/net is a dentry of
// the same name under the same parent, told apart only by proc_sys_compare, so in the
// shared /proc the first lookup in each new namespace walks those of all namespaces
// alive: O(N) per namespace. In a procfs of its own only the namespaces written through
// it since it was made are there. Making one costs about as much as creating a
// namespace, so it is kept for many. For one thread at a time.
class SysctlWriter {
public:
    static constexpr unsigned kRenewAfter = 256;
    // Throws KernelError naming the key, as sysctl_write_here.
    void write(const std::string& key, const std::string& value);

private:
    UniqueFd root_;  // the procfs instance's root, or none: /proc
    unsigned writes_ = 0;
    bool own_procfs_ = true;  // false once the kernel refused one
};

// --- dumps -----------------------------------------------------------------------------

// IF_OPER_UP of <linux/if.h> (RFC 2863), which cannot be included next to <net/if.h>.
inline constexpr std::uint8_t kOperUp = 6;

struct LinkInfo {
    int ifindex = 0;
    std::string name;
    std::string kind;            // IFLA_INFO_KIND: "veth", "bridge", "tun", ""...; "tap" for a TAP device
    unsigned flags = 0;          // IFF_*
    unsigned short type = 0;     // ARPHRD_*: ARPHRD_ETHER for the kinds that have a MAC
    std::uint8_t operstate = 0;  // IF_OPER_*
    std::uint32_t mtu = 0;
    Mac mac{};
    int master = 0;
};
// = ip link show. Throws KernelError.
std::vector<LinkInfo> link_dump(Handle& h);
// The interface `name` in the handle's namespace (one RTM_GETLINK): nullopt when there is
// none. Throws KernelError.
std::optional<LinkInfo> link_get(Handle& h, const std::string& name);
// The ifindex of `name` in the handle's namespace (one RTM_GETLINK). Throws
// KernelError (ENODEV when there is none).
int ifindex_of(Handle& h, const std::string& name);

struct AddrInfo {
    int ifindex = 0;
    IpPrefix prefix;
    std::uint32_t flags = 0;  // IFA_F_* (IFA_F_TENTATIVE, IFA_F_NODAD, ...)
    std::uint8_t scope = 0;
};
// = ip addr show. Throws KernelError.
std::vector<AddrInfo> addr_dump(Handle& h);

struct RouteInfo {
    int family = 0;
    std::optional<IpPrefix> dst;  // nullopt: default
    std::optional<IpAddress> gateway;
    int oif = 0;
    std::uint32_t table = 0;
    std::uint32_t metric = 0;
    std::uint8_t protocol = 0;
    std::uint8_t scope = 0;
    std::uint8_t type = 0;
};
// = ip route show table all (IPv4 and IPv6). Throws KernelError.
std::vector<RouteInfo> route_dump(Handle& h);

// Deletes the neighbour (ARP/ND) entries the kernel learned in the handle's namespace,
// permanent ones kept: = ip neigh flush all. The table is shared by every namespace of
// the host (gc_thresh3), so a lab pinging in waves frees its own entries between them.
// Returns how many were deleted. Throws KernelError.
std::size_t neigh_flush(Handle& h);

// Waits until every listed link is IF_OPER_UP (veths get there once both ends are up;
// the kernel's linkwatch may take up to ~1 s). Throws KernelError(ETIMEDOUT) naming the
// links still not up, or for a failed dump.
void wait_operstate_up(Handle& h, const std::vector<int>& ifindexes, std::chrono::milliseconds timeout);

// The same for many namespaces at once: subscribes each handle's socket to RTNLGRP_LINK,
// dumps each once, then sleeps in epoll until notifications have brought every listed
// link up (re-dumping a namespace only when its notifications were lost or none came
// for 100 ms). No polling interval, no per-link round trip; O(links + notifications).
// Returns, per wait, the ifindexes still not up at the deadline (all empty: success).
// Throws KernelError for a failed dump or socket.
struct OperstateWait {
    Handle* handle;
    std::vector<int> ifindexes;
};
std::vector<std::vector<int>> wait_operstate_up_many(const std::vector<OperstateWait>& waits,
                                                     std::chrono::milliseconds timeout);

}  // namespace labctl::rtnl

namespace labctl::rtnl {

// --- kernel features -------------------------------------------------------------------

// Kernel features a lab may need that some kernels lack (docs/kernel-layer.md).
enum class Feature { veth, bridge, tuntap, netem, tbf, vlan_8021q, bridge_vlan_filtering, dummy };

// "netem qdisc", "802.1Q VLAN devices", ...
std::string feature_name(Feature f);
// The kernel option: "CONFIG_NET_SCH_NETEM", ...
std::string feature_config(Feature f);
// A sentence a user can act on: "link impairments need the netem qdisc
// (CONFIG_NET_SCH_NETEM); this kernel has none".
std::string missing_feature_message(Feature f);

// Tries each wanted feature for real in a temporary namespace of its own
// ("labctl-probe-<random>", removed before returning; on stock kernels this also loads
// the modules on demand) and returns those that are missing, in the order asked.
// Touches nothing else. Throws KernelError when the probe itself cannot run (no
// privileges: EPERM).
std::vector<Feature> missing_features(const std::vector<Feature>& wanted);

}  // namespace labctl::rtnl
