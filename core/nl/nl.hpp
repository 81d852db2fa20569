#pragma once
// A thin layer over libmnl: a netlink socket, a request builder, batched requests with
// acks matched by sequence number, dumps. It hides nothing of netlink: callers build
// the family headers and attributes themselves (see rtnl/).
//
// Kernel facts this layer relies on:
// - A request sent to a kernel netlink socket is processed synchronously inside
//   sendto(): when it returns, every ack of that buffer is already queued on our socket
//   (or was dropped because our receive buffer was full, which the next recv reports
//   as ENOBUFS).
// - Each message of a buffer is processed on its own: a failing request does not stop
//   the ones after it. Callers order dependent requests themselves.
// - The portid is not the pid; the kernel assigns it at bind time.

#include <linux/netlink.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct mnl_socket;

namespace labctl::nl {

// A NETLINK_ROUTE socket. Movable, not copyable; closed by the destructor. Not for use
// by two threads at once (acks are matched by sequence number on one reader).
class Socket {
public:
    // Opens a NETLINK_ROUTE socket in the CALLING THREAD's network namespace (open it
    // on a thread inside the target namespace, see netns::run_in), SOCK_CLOEXEC, with
    // NETLINK_EXT_ACK and NETLINK_CAP_ACK set and large buffers, bound (kernel-chosen
    // portid). Throws KernelError.
    static Socket open_route();

    Socket(Socket&&) noexcept;
    Socket& operator=(Socket&&) noexcept;
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;
    ~Socket();

    // The kernel-assigned port id and the fd. Throw nothing.
    std::uint32_t portid() const;
    int fd() const;
    mnl_socket* get() const noexcept { return sock_; }
    // Sequence numbers for requests sent on this socket; never 0.
    std::uint32_t next_seq() noexcept;

private:
    explicit Socket(mnl_socket* sock);
    mnl_socket* sock_ = nullptr;
    std::uint32_t seq_ = 0;
};

class Message;

// An open nested attribute; closed by end() or the destructor. Nests close in reverse
// order of opening (as scopes do). Holds an offset, so the message may grow meanwhile.
// Close nests (end() or an inner scope) before returning the message from a function:
// a returned message may be moved out before the Nest's destructor runs.
class Nest {
public:
    Nest(Message& msg, std::size_t offset) : msg_(&msg), offset_(offset) {}
    Nest(Nest&& other) noexcept : msg_(other.msg_), offset_(other.offset_) { other.msg_ = nullptr; }
    Nest& operator=(Nest&&) = delete;
    Nest(const Nest&) = delete;
    Nest& operator=(const Nest&) = delete;
    ~Nest() { end(); }
    void end() noexcept;

private:
    Message* msg_;
    std::size_t offset_;
};

// One netlink request over its own growing buffer. Pointers into it (hdr(), header<T>())
// are valid until the next put. The put_* functions throw std::length_error for an
// attribute over 64 KiB (netlink's 16-bit length), else only std::bad_alloc.
class Message {
public:
    // nlmsg_type = type, nlmsg_flags = flags | NLM_F_REQUEST. Seq and portid are set when
    // sent. Throws nothing but std::bad_alloc.
    Message(std::uint16_t type, std::uint16_t flags);

    // The family header after nlmsghdr (ifinfomsg, ifaddrmsg, rtmsg, tcmsg...), zeroed on
    // first use. Must be first requested before any attribute is put; later calls must
    // use a type of the same size. Throws std::logic_error otherwise.
    template <class T>
    T& header() {
        return *static_cast<T*>(family_header(sizeof(T)));
    }

    void put_u8(std::uint16_t type, std::uint8_t v) { put_bytes(type, &v, sizeof v); }
    void put_u16(std::uint16_t type, std::uint16_t v) { put_bytes(type, &v, sizeof v); }
    void put_u32(std::uint16_t type, std::uint32_t v) { put_bytes(type, &v, sizeof v); }
    void put_u64(std::uint16_t type, std::uint64_t v) { put_bytes(type, &v, sizeof v); }
    void put_s32(std::uint16_t type, std::int32_t v) { put_bytes(type, &v, sizeof v); }
    void put_s64(std::uint16_t type, std::int64_t v) { put_bytes(type, &v, sizeof v); }
    // Without the terminating NUL.
    void put_str(std::uint16_t type, std::string_view s) { put_bytes(type, s.data(), s.size()); }
    // With the terminating NUL (what the kernel wants for IFLA_IFNAME, IFLA_INFO_KIND...).
    void put_strz(std::uint16_t type, std::string_view s);
    void put_bytes(std::uint16_t type, const void* data, std::size_t len);
    // An attribute without payload.
    void put_flag(std::uint16_t type) { put_bytes(type, nullptr, 0); }
    // Raw bytes appended without an attribute header, padded to NLMSG_ALIGNTO: for a
    // struct that heads a nest's payload (the veth peer's ifinfomsg, netem's qopt).
    void put_raw(const void* data, std::size_t len);
    // Opens a nested attribute (type | NLA_F_NESTED, as strict kernel parsers want);
    // the returned Nest closes it.
    [[nodiscard]] Nest nest(std::uint16_t type);
    // The same without NLA_F_NESTED, for attributes whose payload starts with a struct
    // (VETH_INFO_PEER, netem's TCA_OPTIONS): iproute2 sends those without the flag.
    [[nodiscard]] Nest nest_plain(std::uint16_t type);

    nlmsghdr* hdr() noexcept { return reinterpret_cast<nlmsghdr*>(buf_.data()); }
    const nlmsghdr* hdr() const noexcept { return reinterpret_cast<const nlmsghdr*>(buf_.data()); }
    std::size_t size() const noexcept { return hdr()->nlmsg_len; }

private:
    friend class Nest;
    void* family_header(std::size_t size);
    void reserve_more(std::size_t extra);
    std::vector<std::uint8_t> buf_;
    std::size_t family_header_size_ = 0;
};

// The outcome of one request of a Batch. error is a positive errno, 0 for success.
struct Result {
    int error = 0;
    std::string kernel_message;  // the kernel's extack text, if any
    std::string context;         // what the caller passed to Batch::add
};

// Many requests sent in as few sendto() calls as possible: messages are packed back to
// back into buffers of up to 32 KiB, each with NLM_F_ACK and its own sequence number;
// the acks of one buffer are read before the next buffer is sent, which bounds what
// the socket must queue. Every request is attempted, also after one fails (netlink
// processes each message independently), so order dependent requests yourself (a
// bridge before its ports) and treat a failure of an earlier one as making later ones
// meaningless.
class Batch {
public:
    // `context` names the object and operation, e.g. "h1: creating veth h1:eth0 <-> sw:p1".
    void add(Message&& msg, std::string context);
    std::size_t size() const noexcept { return entries_.size(); }
    bool empty() const noexcept { return entries_.empty(); }
    void clear() noexcept { entries_.clear(); }

    // Sends everything; one Result per request, in the order added. A request the
    // kernel answers with a transient error (EBUSY, ENOBUFS) is sent again after the
    // rest, at most 4 times in all with 10/20/40 ms pauses; its Result is the last
    // answer. A request whose ack was lost (receive buffer overrun) gets ENOBUFS and is
    // not sent again: its outcome is unknown. Throws
    // KernelError only when the socket itself fails (sendto/recv errors other than
    // ENOBUFS, EINTR).
    std::vector<Result> run(Socket& sock) const;
    // Like run(), then throws the FIRST failed request as KernelError(error, context,
    // kernel_message).
    void run_or_throw(Socket& sock) const;

private:
    struct Entry {
        Message msg;
        std::string context;
    };
    std::vector<Entry> entries_;
};

// One request with NLM_F_ACK; EBUSY and ENOBUFS answers are retried as in Batch::run.
// Throws KernelError(errno, context, extack).
void request(Socket& sock, Message& msg, const std::string& context);

// One request whose answer is one or more messages (e.g. RTM_GETLINK for one ifindex):
// `each` sees every message up to the ack. EBUSY and ENOBUFS answers are retried as in
// Batch::run. Throws KernelError.
void query(Socket& sock, Message& msg, const std::function<void(const nlmsghdr*)>& each, const std::string& context);

// A dump (NLM_F_DUMP is added). The whole answer is collected first and `each` runs
// only over a consistent one: when the kernel flags NLM_F_DUMP_INTR (the table changed
// meanwhile), the dump is restarted; after 10 attempts in all, KernelError(EAGAIN).
// Throws KernelError.
void dump(Socket& sock, Message& msg, const std::function<void(const nlmsghdr*)>& each, const std::string& context);

// Parsing helpers for answers: the attributes after the family header of `nlh`, indexed
// by type (nullptr when absent; later duplicates win). `max_type` bounds the table.
std::vector<const nlattr*> parse_attrs(const nlmsghdr* nlh, std::size_t family_header_size, std::uint16_t max_type);
std::vector<const nlattr*> parse_nested(const nlattr* nest, std::uint16_t max_type);

// Test hook for reliability work: when active, a fraction of the requests made through
// Batch/request/query fail with one of `errnos` WITHOUT being sent (kernel_message
// "injected fault"), as if the kernel had answered so (transient ones are retried).
// With `dump_intr`, the same fraction of the parts of dump answers arrive flagged
// NLM_F_DUMP_INTR, as if the table had changed during the dump. Also read once from the
// environment: LABCTL_NL_FAULTS="EEXIST,EBUSY,DUMP_INTR:0.05:42" (errnos by name or
// number, or DUMP_INTR : fraction : seed).
struct FaultInjection {
    double fraction = 0;
    std::vector<int> errnos;
    std::uint64_t seed = 0;
    bool dump_intr = false;
};
// nullopt turns injection off (and overrides the environment). Thread-safe.
void set_fault_injection(std::optional<FaultInjection> faults);
// Parses the LABCTL_NL_FAULTS syntax; nullopt when malformed. Throws nothing.
std::optional<FaultInjection> parse_fault_spec(std::string_view spec);
// How many times dumps in this process were restarted because the kernel (or the hook)
// flagged an answer NLM_F_DUMP_INTR or parts of it were lost (ENOBUFS); an answer
// flagged on the last of the 10 attempts counts too.
std::uint64_t dump_restarts();
// How many times requests in this process were sent again after a transient error
// (EBUSY, ENOBUFS): at most 3 per request (4 attempts).
std::uint64_t request_retries();

}  // namespace labctl::nl
