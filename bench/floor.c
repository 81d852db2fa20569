// The floor: only the kernel work of a star or a campus lab, nothing else.
//
//   floor up PREFIX N     namespaces PREFIX-sw and PREFIX-h1..hN; a bridge br0 in sw;
//                         one veth pair per host (sw:pI <-> hI:eth0), each end born in
//                         its namespace, the sw end up and enslaved; hI gets
//                         10.(I/250).(I%250+1)... on eth0, eth0 and lo up.
//   floor down PREFIX N   unmounts and unlinks those namespaces.
//   floor up-campus PREFIX N [PORTS]
//                         bench/topo.py's campus (PORTS 500 there): namespaces PREFIX-c,
//                         PREFIX-s1..sK (K = N/PORTS rounded up) and PREFIX-h1..hN; below.
//   floor down-campus PREFIX N [PORTS]
//                         unmounts and unlinks those namespaces.
//
// As docs/kernel-layer.md describes: per namespace the file, unshare, bind mount, the namespace
// fd and one netlink socket opened inside it; then all veth pairs in as few sendto()s as
// the socket buffer allows, interface indexes chosen here; then one send (and one
// receive) per host namespace with its address and link-ups. Acks only for errors and
// for the last message of each send. Two requests labctl found cheaper for the kernel
// are used here too, so the floor stays a floor: veths made with one queue each way,
// and the bridge's multicast snooping off while its ports come up (bench/observations.md).
// The same kernel work as `labctl up` of the star: in each new namespace the two IPv6
// sysctls labctl writes (net.ipv6.conf.default.accept_dad and router_solicitations 0;
// labctl has since added net.ipv4.icmp_ratemask and net.ipv6.icmp.ratelimit 0, which the
// campus writes and the star, kept as its committed results measured it, does not),
// and at the end the wait until every veth end is operationally up (carrier), then
// multicast snooping back on. The campus: see campus() below. One thread: labctl makes
// namespaces on up to 4 threads (2 on 2 CPUs); run.py reports `labctl1`
// (LABCTL_NETNS_THREADS=1) beside it.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define NETNS_DIR "/run/netns"
#define CHUNK (64 * 1024)

static void die(const char* what) {
    perror(what);
    exit(1);
}

static void ns_path(char* out, size_t len, const char* prefix, int i) {
    if (i == 0)
        snprintf(out, len, NETNS_DIR "/%s-sw", prefix);
    else
        snprintf(out, len, NETNS_DIR "/%s-h%d", prefix, i);
}

// /run/netns a shared mount point, as iproute2 makes it.
static void prepare_netns_dir(void) {
    mkdir(NETNS_DIR, 0755);
    if (mount("", NETNS_DIR, "none", MS_SHARED | MS_REC, NULL) == 0) return;
    if (errno != EINVAL) die("mount --make-shared " NETNS_DIR);
    if (mount(NETNS_DIR, NETNS_DIR, "none", MS_BIND | MS_REC, NULL) != 0) die("bind " NETNS_DIR);
    if (mount("", NETNS_DIR, "none", MS_SHARED | MS_REC, NULL) != 0) die("make-shared " NETNS_DIR);
}

struct out {
    char* buf;
    size_t len;
};

// Sends the buffer in chunks on message boundaries, then waits for the ack of the
// last message (which has NLM_F_ACK); any error ack on the way is fatal.
static void send_and_wait(struct mnl_socket* nl, char* buf, size_t len, unsigned last_seq) {
    size_t off = 0;
    while (off < len) {
        size_t end = off;
        while (end < len) {
            struct nlmsghdr* h = (struct nlmsghdr*)(buf + end);
            if (end - off + h->nlmsg_len > CHUNK && end > off) break;
            end += NLMSG_ALIGN(h->nlmsg_len);
        }
        if (mnl_socket_sendto(nl, buf + off, end - off) < 0) die("sendto");
        off = end;
    }
    char rbuf[MNL_SOCKET_BUFFER_SIZE];
    for (;;) {
        ssize_t n = mnl_socket_recvfrom(nl, rbuf, sizeof rbuf);
        if (n < 0) die("recv");
        for (struct nlmsghdr* h = (struct nlmsghdr*)rbuf; mnl_nlmsg_ok(h, (int)n); h = mnl_nlmsg_next(h, (int*)&n)) {
            if (h->nlmsg_type != NLMSG_ERROR) continue;
            struct nlmsgerr* e = mnl_nlmsg_get_payload(h);
            if (e->error) {
                errno = -e->error;
                fprintf(stderr, "request %u: ", h->nlmsg_seq);
                die("kernel");
            }
            if (h->nlmsg_seq == last_seq) return;
        }
    }
}

static struct nlmsghdr* msg_start(struct out* o, size_t cap, int type, int flags, unsigned seq) {
    if (o->len + 512 > cap) {
        fprintf(stderr, "buffer too small\n");
        exit(1);
    }
    struct nlmsghdr* h = mnl_nlmsg_put_header(o->buf + o->len);
    h->nlmsg_type = type;
    h->nlmsg_flags = NLM_F_REQUEST | flags;
    h->nlmsg_seq = seq;
    return h;
}

static void msg_end(struct out* o, struct nlmsghdr* h) { o->len += NLMSG_ALIGN(h->nlmsg_len); }

// What labctl writes in each new namespace (realize.cpp), the way it does
// (rtnl::SysctlWriter): through a detached procfs instance of our own, renewed every
// 256 writes, so that the lookups do not walk every other namespace's /proc/sys/net
// (bench/observations.md). `path` is relative to a procfs root ("sys/net/...").
static void write_sysctl(const char* path, const char* value) {
    static int root = -1, writes = 0;
    if (root < 0 || writes >= 256) {
        if (root >= 0) close(root);
        int context = fsopen("proc", FSOPEN_CLOEXEC);
        if (context < 0 || fsconfig(context, FSCONFIG_CMD_CREATE, NULL, NULL, 0) != 0) die("fsopen proc");
        root = fsmount(context, FSMOUNT_CLOEXEC, 0);
        if (root < 0) die("fsmount proc");
        close(context);
        writes = 0;
    }
    ++writes;
    int f = openat(root, path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (f < 0 || write(f, value, strlen(value)) != (ssize_t)strlen(value)) die(path);
    close(f);
}

static int operstate_cb(const struct nlattr* a, void* data) {
    if (mnl_attr_get_type(a) == IFLA_OPERSTATE) *(int*)data = mnl_attr_get_u8(a);
    return MNL_CB_OK;
}

// How many links of the namespace behind `nl` with ifindex in [lo, hi] are
// operationally up (one RTM_GETLINK dump).
static int count_oper_up(struct mnl_socket* nl, int lo, int hi) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr* h = mnl_nlmsg_put_header(buf);
    h->nlmsg_type = RTM_GETLINK;
    h->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    h->nlmsg_seq = 0x7fff0000;
    struct rtgenmsg* g = mnl_nlmsg_put_extra_header(h, sizeof *g);
    g->rtgen_family = AF_UNSPEC;
    if (mnl_socket_sendto(nl, h, h->nlmsg_len) < 0) die("sendto getlink");
    int up = 0;
    for (;;) {
        ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof buf);
        if (n < 0) die("recv getlink");
        for (struct nlmsghdr* m = (struct nlmsghdr*)buf; mnl_nlmsg_ok(m, (int)n); m = mnl_nlmsg_next(m, (int*)&n)) {
            if (m->nlmsg_seq != 0x7fff0000) continue;
            if (m->nlmsg_type == NLMSG_DONE) return up;
            if (m->nlmsg_type == NLMSG_ERROR) die("getlink");
            if (m->nlmsg_type != RTM_NEWLINK) continue;
            struct ifinfomsg* ifi = mnl_nlmsg_get_payload(m);
            int state = -1;
            mnl_attr_parse(m, sizeof *ifi, operstate_cb, &state);
            if (ifi->ifi_index >= lo && ifi->ifi_index <= hi && state == IF_OPER_UP) ++up;
        }
    }
}

// labctl's "waiting for links": until every veth end is operationally up.
static void wait_carrier(struct mnl_socket* nl, int lo, int hi) {
    for (int tries = 0; count_oper_up(nl, lo, hi) < hi - lo + 1; ++tries) {
        if (tries > 30000) {
            fprintf(stderr, "links not up after 30 s\n");
            exit(1);
        }
        usleep(1000);
    }
}

static void link_up(struct out* o, size_t cap, int ifindex, int flags, unsigned seq) {
    struct nlmsghdr* h = msg_start(o, cap, RTM_NEWLINK, flags, seq);
    struct ifinfomsg* ifi = mnl_nlmsg_put_extra_header(h, sizeof *ifi);
    ifi->ifi_index = ifindex;
    ifi->ifi_flags = IFF_UP;
    ifi->ifi_change = IFF_UP;
    msg_end(o, h);
}

// What labctl writes in each new namespace of a lab (realize.cpp, create_namespaces);
// routers forward too.
static void write_lab_sysctls(int router) {
    write_sysctl("sys/net/ipv6/conf/default/accept_dad", "0");
    write_sysctl("sys/net/ipv6/conf/default/router_solicitations", "0");
    write_sysctl("sys/net/ipv4/icmp_ratemask", "0");
    write_sysctl("sys/net/ipv6/icmp/ratelimit", "0");
    if (router) {
        write_sysctl("sys/net/ipv4/ip_forward", "1");
        write_sysctl("sys/net/ipv6/conf/all/forwarding", "1");
    }
}

// A named namespace the iproute2 way: the file, unshare, the bind mount. The thread is
// left inside the new namespace.
static void new_netns(const char* path) {
    int f = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
    if (f < 0) die(path);
    close(f);
    if (unshare(CLONE_NEWNET) != 0) die("unshare");
    if (mount("/proc/self/ns/net", path, "none", MS_BIND, NULL) != 0) die("bind mount");
}

// The fd of the thread's namespace and a netlink socket opened inside it.
static void open_here(int* fd, struct mnl_socket** nl) {
    *fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (*fd < 0) die("open netns");
    *nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
    if (!*nl || mnl_socket_bind(*nl, 0, MNL_SOCKET_AUTOPID) < 0) die("netlink socket");
    int one = 1;
    mnl_socket_setsockopt(*nl, NETLINK_CAP_ACK, &one, sizeof one);
}

// Bridge br0 at `ifindex`, up, STP off (the default), forward_delay 0, multicast
// snooping off until bridge_snooping_on.
static void add_bridge(struct out* o, size_t cap, int ifindex, int flags, unsigned seq) {
    struct nlmsghdr* h = msg_start(o, cap, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | flags, seq);
    struct ifinfomsg* ifi = mnl_nlmsg_put_extra_header(h, sizeof *ifi);
    ifi->ifi_index = ifindex;
    ifi->ifi_flags = IFF_UP;
    ifi->ifi_change = IFF_UP;
    mnl_attr_put_strz(h, IFLA_IFNAME, "br0");
    struct nlattr* li = mnl_attr_nest_start(h, IFLA_LINKINFO);
    mnl_attr_put_strz(h, IFLA_INFO_KIND, "bridge");
    struct nlattr* data = mnl_attr_nest_start(h, IFLA_INFO_DATA);
    mnl_attr_put_u32(h, IFLA_BR_FORWARD_DELAY, 0);
    mnl_attr_put_u32(h, IFLA_BR_STP_STATE, 0);
    mnl_attr_put_u8(h, IFLA_BR_MCAST_SNOOPING, 0);  // on again at the end: see below
    mnl_attr_nest_end(h, data);
    mnl_attr_nest_end(h, li);
    msg_end(o, h);
}

// Multicast snooping back on (the kernel's default; a lab switch behaves as one): off
// while the ports came up, each of which otherwise re-enables multicast on every port
// of the bridge.
static void bridge_snooping_on(struct mnl_socket* nl, struct out* o, size_t cap, int ifindex) {
    o->len = 0;
    struct nlmsghdr* h = msg_start(o, cap, RTM_NEWLINK, NLM_F_ACK, 1);
    struct ifinfomsg* ifi = mnl_nlmsg_put_extra_header(h, sizeof *ifi);
    ifi->ifi_index = ifindex;
    struct nlattr* li = mnl_attr_nest_start(h, IFLA_LINKINFO);
    mnl_attr_put_strz(h, IFLA_INFO_KIND, "bridge");
    struct nlattr* data = mnl_attr_nest_start(h, IFLA_INFO_DATA);
    mnl_attr_put_u8(h, IFLA_BR_MCAST_SNOOPING, 1);
    mnl_attr_nest_end(h, data);
    mnl_attr_nest_end(h, li);
    msg_end(o, h);
    send_and_wait(nl, o->buf, o->len, 1);
}

// A veth pair made from the sender's namespace: `name` there, up and enslaved to
// `master`; its peer `peer_name` born (down) in the namespace of `peer_fd`.
static struct nlmsghdr* add_veth(struct out* o, size_t cap, int flags, unsigned seq, int ifindex, const char* name,
                                 int master, int peer_index, const char* peer_name, int peer_fd) {
    struct nlmsghdr* h = msg_start(o, cap, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | flags, seq);
    struct ifinfomsg* ifi = mnl_nlmsg_put_extra_header(h, sizeof *ifi);
    ifi->ifi_index = ifindex;
    ifi->ifi_flags = IFF_UP;
    ifi->ifi_change = IFF_UP;
    mnl_attr_put_strz(h, IFLA_IFNAME, name);
    mnl_attr_put_u32(h, IFLA_MASTER, master);
    // One queue each way: what a veth uses anyway, without the per-CPU queues the
    // kernel would allocate and then cut back under RTNL (an RCU grace period each).
    mnl_attr_put_u32(h, IFLA_NUM_TX_QUEUES, 1);
    mnl_attr_put_u32(h, IFLA_NUM_RX_QUEUES, 1);
    struct nlattr* li = mnl_attr_nest_start(h, IFLA_LINKINFO);
    mnl_attr_put_strz(h, IFLA_INFO_KIND, "veth");
    struct nlattr* data = mnl_attr_nest_start(h, IFLA_INFO_DATA);
    struct nlattr* peer = mnl_attr_nest_start(h, VETH_INFO_PEER);
    peer->nla_type &= ~NLA_F_NESTED;
    struct ifinfomsg* pi = mnl_nlmsg_put_extra_header(h, sizeof *pi);
    memset(pi, 0, sizeof *pi);
    pi->ifi_index = peer_index;
    mnl_attr_put_strz(h, IFLA_IFNAME, peer_name);
    mnl_attr_put_u32(h, IFLA_NET_NS_FD, (unsigned)peer_fd);
    mnl_attr_put_u32(h, IFLA_NUM_TX_QUEUES, 1);
    mnl_attr_put_u32(h, IFLA_NUM_RX_QUEUES, 1);
    mnl_attr_nest_end(h, peer);
    mnl_attr_nest_end(h, data);
    mnl_attr_nest_end(h, li);
    msg_end(o, h);
    return h;
}

// An IPv4 address (host byte order) on `ifindex`; with its broadcast address when `brd`
// is not 0, as labctl gives one to every prefix of /30 or shorter.
static void add_addr(struct out* o, size_t cap, unsigned seq, int ifindex, uint32_t addr, int plen, uint32_t brd) {
    struct nlmsghdr* h = msg_start(o, cap, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, seq);
    struct ifaddrmsg* ifa = mnl_nlmsg_put_extra_header(h, sizeof *ifa);
    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = plen;
    ifa->ifa_index = ifindex;
    mnl_attr_put_u32(h, IFA_LOCAL, htonl(addr));
    mnl_attr_put_u32(h, IFA_ADDRESS, htonl(addr));
    if (brd) mnl_attr_put_u32(h, IFA_BROADCAST, htonl(brd));
    msg_end(o, h);
}

// The default route via `gw` (host byte order), as labctl's route_add makes it.
static void add_default_route(struct out* o, size_t cap, int flags, unsigned seq, uint32_t gw) {
    struct nlmsghdr* h = msg_start(o, cap, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL | flags, seq);
    struct rtmsg* rtm = mnl_nlmsg_put_extra_header(h, sizeof *rtm);
    rtm->rtm_family = AF_INET;
    rtm->rtm_table = RT_TABLE_MAIN;
    rtm->rtm_protocol = RTPROT_BOOT;
    rtm->rtm_type = RTN_UNICAST;
    rtm->rtm_scope = RT_SCOPE_UNIVERSE;
    mnl_attr_put_u32(h, RTA_GATEWAY, htonl(gw));
    msg_end(o, h);
}

static int star(const char* op, const char* prefix, int n) {
    char path[256];
    if (strcmp(op, "down") == 0) {
        for (int i = 0; i <= n; ++i) {
            ns_path(path, sizeof path, prefix, i);
            umount2(path, MNT_DETACH);
            if (unlink(path) != 0 && errno != ENOENT) die(path);
        }
        return 0;
    }
    if (strcmp(op, "up") != 0) return 2;

    int root = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (root < 0) die("open own netns");
    prepare_netns_dir();
    int* fds = calloc(n + 1, sizeof(int));
    struct mnl_socket** socks = calloc(n + 1, sizeof(*socks));
    for (int i = 0; i <= n; ++i) {
        ns_path(path, sizeof path, prefix, i);
        new_netns(path);
        write_sysctl("sys/net/ipv6/conf/default/accept_dad", "0");
        write_sysctl("sys/net/ipv6/conf/default/router_solicitations", "0");
        open_here(&fds[i], &socks[i]);
    }
    if (setns(root, CLONE_NEWNET) != 0) die("setns back");

    // The switch: bridge br0 (index 2), lo up, and every veth pair with its switch end
    // up and enslaved.
    const int br = 2;
    size_t cap = (size_t)(n + 4) * 512;
    struct out o = {malloc(cap), 0};
    unsigned seq = 0;
    add_bridge(&o, cap, br, n == 0 ? NLM_F_ACK : 0, ++seq);
    link_up(&o, cap, 1, 0, ++seq);
    for (int i = 1; i <= n; ++i) {
        char name[IFNAMSIZ];
        snprintf(name, sizeof name, "p%d", i);
        add_veth(&o, cap, i == n ? NLM_F_ACK : 0, ++seq, 1000 + i, name, br, 1000, "eth0", fds[i]);
    }
    send_and_wait(socks[0], o.buf, o.len, n == 0 ? 1 : seq);

    // Each host: its address, eth0 and lo up; one send, one receive.
    for (int i = 1; i <= n; ++i) {
        o.len = 0;
        seq = 0;
        add_addr(&o, cap, ++seq, 1000, (10u << 24) | (1u << 16) | (unsigned)(i / 250) << 8 | (unsigned)(i % 250 + 1),
                 16, 0);
        link_up(&o, cap, 1000, 0, ++seq);
        link_up(&o, cap, 1, NLM_F_ACK, ++seq);
        send_and_wait(socks[i], o.buf, o.len, seq);
    }

    // Carrier on both ends of every veth, as labctl waits for it.
    wait_carrier(socks[0], 1001, 1000 + n);
    for (int i = 1; i <= n; ++i) wait_carrier(socks[i], 1000, 1000);
    bridge_snooping_on(socks[0], &o, cap, br);
    return 0;
}

// The campus of bench/topo.py (campus(n, ports)): switches s1..sK of `ports` hosts each
// (the last one fewer), each switch's `uplink` on the core router c's ethJ. c has
// 10.J.0.1/16 on ethJ and forwards; host I, port pM of switch sJ, has 10.J.(M/250+1).(M%250+1)/16
// on eth0 and its default route via 10.J.0.1. Interface indexes: lo 1, br0 2, a switch's
// uplink 1000 and port pM 1000+M, c's ethJ 1000+J, a host's eth0 1000 (each veth end's
// index differs from its peer's: linkwatch handles its carrier at once).
//
// The work, in this order: c and the switches (their namespaces with labctl's sysctls, c
// a router's too; their fds and sockets held to the end); per switch one send with br0,
// lo up and the uplink pair (switch end up and enslaved, its peer born in c); c's
// addresses and link-ups in one send. Then the hosts, NS_CHUNK at a time: their
// namespaces; their veth pairs, one batch per switch from its namespace (switch end up
// and enslaved); per host one send with its address, eth0 and lo up and its default
// route; then the wait for carrier on the ends of the chunk before (the kernel's
// linkwatch brought them up meanwhile, so the wait is one dump each, not a sleep) and
// that chunk's fds closed. So the process holds the fds of two chunks at most, about
// 4 * NS_CHUNK (labctl keeps at most 256 nodes' namespace fds and sockets; a 10,000-host
// lab must work under a limit of 4,096, and a 1,000-host one under 1,024). Last, the wait
// for carrier on every switch's and c's ends, and multicast snooping back on.
// (labctl makes a link from the end whose node has more links: a switch's uplink from the
// switch as long as it has at least as many links as c, true at every size run.py uses.)
#define NS_CHUNK 128

// Where host I's namespace fd and socket are kept: two chunks' worth of slots.
static int slot(int i) { return (i - 1) % (2 * NS_CHUNK); }

// Waits for carrier on the eth0 of hosts [first, last], then closes their fds.
static void hosts_done(int* fds, struct mnl_socket** socks, int first, int last) {
    for (int i = first; i <= last; ++i) {
        wait_carrier(socks[slot(i)], 1000, 1000);
        mnl_socket_close(socks[slot(i)]);
        close(fds[slot(i)]);
    }
}

static void campus_path(char* out, size_t len, const char* prefix, char kind, int i) {
    if (kind == 'c')
        snprintf(out, len, NETNS_DIR "/%s-c", prefix);
    else
        snprintf(out, len, NETNS_DIR "/%s-%c%d", prefix, kind, i);
}

static int campus(const char* op, const char* prefix, int n, int ports) {
    const int k = n > ports ? (n + ports - 1) / ports : 1;
    char path[256], name[IFNAMSIZ];
    if (strcmp(op, "down-campus") == 0) {
        for (int i = 0; i <= k + n; ++i) {
            if (i == 0)
                campus_path(path, sizeof path, prefix, 'c', 0);
            else if (i <= k)
                campus_path(path, sizeof path, prefix, 's', i);
            else
                campus_path(path, sizeof path, prefix, 'h', i - k);
            umount2(path, MNT_DETACH);
            if (unlink(path) != 0 && errno != ENOENT) die(path);
        }
        return 0;
    }
    if (strcmp(op, "up-campus") != 0) return 2;

    int root = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (root < 0) die("open own netns");
    prepare_netns_dir();
    // Index 0 is c, J is sJ.
    int* fds = calloc(k + 1, sizeof(int));
    struct mnl_socket** socks = calloc(k + 1, sizeof(*socks));
    for (int j = 0; j <= k; ++j) {
        campus_path(path, sizeof path, prefix, j == 0 ? 'c' : 's', j);
        new_netns(path);
        write_lab_sysctls(j == 0);
        open_here(&fds[j], &socks[j]);
    }
    if (setns(root, CLONE_NEWNET) != 0) die("setns back");

    const int br = 2;
    size_t cap = (size_t)(k + NS_CHUNK + 8) * 512;
    struct out o = {malloc(cap), 0};
    unsigned seq;
    for (int j = 1; j <= k; ++j) {
        o.len = 0;
        seq = 0;
        add_bridge(&o, cap, br, 0, ++seq);
        link_up(&o, cap, 1, 0, ++seq);
        snprintf(name, sizeof name, "eth%d", j);
        add_veth(&o, cap, NLM_F_ACK, ++seq, 1000, "uplink", br, 1000 + j, name, fds[0]);
        send_and_wait(socks[j], o.buf, o.len, seq);
    }
    o.len = 0;
    seq = 0;
    for (int j = 1; j <= k; ++j) {
        const uint32_t lan = (10u << 24) | (unsigned)j << 16;
        add_addr(&o, cap, ++seq, 1000 + j, lan | 1, 16, lan | 0xffff);
        link_up(&o, cap, 1000 + j, 0, ++seq);
    }
    link_up(&o, cap, 1, NLM_F_ACK, ++seq);
    send_and_wait(socks[0], o.buf, o.len, seq);

    int hfd[2 * NS_CHUNK];
    struct mnl_socket* hsock[2 * NS_CHUNK];
    for (int first = 1; first <= n; first += NS_CHUNK) {
        const int last = first + NS_CHUNK - 1 < n ? first + NS_CHUNK - 1 : n;
        for (int i = first; i <= last; ++i) {
            campus_path(path, sizeof path, prefix, 'h', i);
            new_netns(path);
            write_lab_sysctls(0);
            open_here(&hfd[slot(i)], &hsock[slot(i)]);
        }
        if (setns(root, CLONE_NEWNET) != 0) die("setns back");
        // Their veth pairs: one batch per switch the chunk reaches.
        for (int i = first; i <= last;) {
            const int j = (i - 1) / ports + 1;
            o.len = 0;
            seq = 0;
            struct nlmsghdr* h = NULL;
            for (; i <= last && (i - 1) / ports + 1 == j; ++i) {
                snprintf(name, sizeof name, "p%d", (i - 1) % ports + 1);
                h = add_veth(&o, cap, 0, ++seq, 1000 + (i - 1) % ports + 1, name, br, 1000, "eth0", hfd[slot(i)]);
            }
            h->nlmsg_flags |= NLM_F_ACK;
            send_and_wait(socks[j], o.buf, o.len, seq);
        }
        // Each host: its address, eth0 and lo up, the default route; one send, one receive.
        for (int i = first; i <= last; ++i) {
            const unsigned j = (unsigned)(i - 1) / ports + 1, m = (unsigned)(i - 1) % ports + 1;
            o.len = 0;
            seq = 0;
            add_addr(&o, cap, ++seq, 1000, (10u << 24) | j << 16 | (m / 250 + 1) << 8 | (m % 250 + 1), 16,
                     (10u << 24) | j << 16 | 0xffff);
            link_up(&o, cap, 1000, 0, ++seq);
            link_up(&o, cap, 1, 0, ++seq);
            add_default_route(&o, cap, NLM_F_ACK, ++seq, (10u << 24) | j << 16 | 1);
            send_and_wait(hsock[slot(i)], o.buf, o.len, seq);
        }
        if (first > 1) hosts_done(hfd, hsock, first - NS_CHUNK, first - 1);
    }
    if (n > 0) hosts_done(hfd, hsock, (n - 1) / NS_CHUNK * NS_CHUNK + 1, n);

    // Carrier on the switches' and c's ends, as labctl waits for it; then snooping on.
    for (int j = 1; j <= k; ++j) {
        const int hosts = j < k ? ports : n - (k - 1) * ports;
        wait_carrier(socks[j], 1000, 1000 + hosts);
    }
    wait_carrier(socks[0], 1001, 1000 + k);
    for (int j = 1; j <= k; ++j) bridge_snooping_on(socks[j], &o, cap, br);
    return 0;
}

int main(int argc, char** argv) {
    if (argc >= 4 && argc <= 5 && strstr(argv[1], "-campus")) {
        int n = atoi(argv[3]), ports = argc == 5 ? atoi(argv[4]) : 500;
        // A bridge takes at most 1023 ports, the uplink one of them.
        if (n < 0 || ports < 1 || ports > 1022) {
            fprintf(stderr, "campus: N >= 0 and 1 <= PORTS <= 1022\n");
            return 2;
        }
        return campus(argv[1], argv[2], n, ports);
    }
    if (argc != 4) {
        fprintf(stderr, "usage: %s up|down PREFIX N\n       %s up-campus|down-campus PREFIX N [PORTS]\n", argv[0],
                argv[0]);
        return 2;
    }
    return star(argv[1], argv[2], atoi(argv[3]));
}
