// pcapng blocks. Every block is: type (u32), total length (u32), body, total length
// again; options are (code u16, length u16, value padded to 4 bytes), ended by
// opt_endofopt. Written in host byte order: the section header's byte-order magic tells
// readers which.
#include <cstring>

#include "capture/capture.hpp"

namespace labctl::capture::pcapng {

namespace {

constexpr std::uint32_t kSectionHeader = 0x0A0D0D0A;
constexpr std::uint32_t kInterfaceDescription = 0x00000001;
constexpr std::uint32_t kInterfaceStatistics = 0x00000005;
constexpr std::uint32_t kEnhancedPacket = 0x00000006;
constexpr std::uint32_t kByteOrderMagic = 0x1A2B3C4D;

constexpr std::uint16_t kOptEnd = 0;
constexpr std::uint16_t kShbUserAppl = 4;
constexpr std::uint16_t kIfName = 2;
constexpr std::uint16_t kIfDescription = 3;
constexpr std::uint16_t kIfTsresol = 9;
constexpr std::uint16_t kEpbFlags = 2;
constexpr std::uint16_t kIsbStartTime = 2;
constexpr std::uint16_t kIsbEndTime = 3;
constexpr std::uint16_t kIsbIfRecv = 4;
constexpr std::uint16_t kIsbOsDrop = 7;
constexpr std::uint16_t kIsbUsrDeliv = 8;

template <typename T>
void put(std::vector<std::uint8_t>& out, T value) {
    std::uint8_t bytes[sizeof(T)];
    std::memcpy(bytes, &value, sizeof(T));
    out.insert(out.end(), bytes, bytes + sizeof(T));
}

void pad4(std::vector<std::uint8_t>& out, std::size_t length) { out.insert(out.end(), (4 - length % 4) % 4, 0); }

void put_bytes(std::vector<std::uint8_t>& out, const void* data, std::size_t length) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    out.insert(out.end(), p, p + length);
    pad4(out, length);
}

void option(std::vector<std::uint8_t>& out, std::uint16_t code, const void* value, std::size_t length) {
    put<std::uint16_t>(out, code);
    put<std::uint16_t>(out, static_cast<std::uint16_t>(length));
    put_bytes(out, value, length);
}

void option(std::vector<std::uint8_t>& out, std::uint16_t code, std::string_view text) {
    // An option value is at most 65535 bytes; names and descriptions are far shorter.
    option(out, code, text.data(), std::min<std::size_t>(text.size(), 0xFFFC));
}

void option_u64(std::vector<std::uint8_t>& out, std::uint16_t code, std::uint64_t value) {
    option(out, code, &value, sizeof value);
}

// Timestamps are two u32 halves, high first, each in host order.
void put_timestamp(std::vector<std::uint8_t>& out, std::uint64_t ns) {
    put<std::uint32_t>(out, static_cast<std::uint32_t>(ns >> 32));
    put<std::uint32_t>(out, static_cast<std::uint32_t>(ns));
}

void end_options(std::vector<std::uint8_t>& out) {
    put<std::uint16_t>(out, kOptEnd);
    put<std::uint16_t>(out, 0);
}

// Opens a block; close() writes both total lengths once the body is complete.
class Block {
public:
    Block(std::vector<std::uint8_t>& out, std::uint32_t type) : out_(out), start_(out.size()) {
        put<std::uint32_t>(out_, type);
        put<std::uint32_t>(out_, 0);
    }
    void close() {
        auto total = static_cast<std::uint32_t>(out_.size() - start_ + 4);
        std::memcpy(out_.data() + start_ + 4, &total, 4);
        put<std::uint32_t>(out_, total);
    }

private:
    std::vector<std::uint8_t>& out_;
    std::size_t start_;
};

}  // namespace

void append_section_header(std::vector<std::uint8_t>& out, std::string_view application) {
    Block b(out, kSectionHeader);
    put<std::uint32_t>(out, kByteOrderMagic);
    put<std::uint16_t>(out, 1);  // major version
    put<std::uint16_t>(out, 0);  // minor version
    put<std::int64_t>(out, -1);  // section length: not known (a stream)
    if (!application.empty()) option(out, kShbUserAppl, application);
    end_options(out);
    b.close();
}

void append_interface(std::vector<std::uint8_t>& out, std::uint16_t linktype, std::uint32_t snaplen,
                      std::string_view name, std::string_view description) {
    Block b(out, kInterfaceDescription);
    put<std::uint16_t>(out, linktype);
    put<std::uint16_t>(out, 0);  // reserved
    put<std::uint32_t>(out, snaplen);
    option(out, kIfName, name);
    if (!description.empty()) option(out, kIfDescription, description);
    const std::uint8_t nanoseconds = 9;  // 10^-9 s
    option(out, kIfTsresol, &nanoseconds, 1);
    end_options(out);
    b.close();
}

void append_packet(std::vector<std::uint8_t>& out, std::uint32_t interface_id, std::uint64_t timestamp_ns,
                   std::span<const std::uint8_t> data, std::uint32_t original_length, Direction direction) {
    Block b(out, kEnhancedPacket);
    put<std::uint32_t>(out, interface_id);
    put_timestamp(out, timestamp_ns);
    put<std::uint32_t>(out, static_cast<std::uint32_t>(data.size()));
    put<std::uint32_t>(out, original_length);
    put_bytes(out, data.data(), data.size());
    if (direction != Direction::unknown) {
        // epb_flags bits 0-1: 01 inbound, 10 outbound.
        std::uint32_t flags = direction == Direction::inbound ? 1 : 2;
        option(out, kEpbFlags, &flags, sizeof flags);
        end_options(out);
    }
    b.close();
}

void append_statistics(std::vector<std::uint8_t>& out, std::uint32_t interface_id, const InterfaceStatistics& s) {
    Block b(out, kInterfaceStatistics);
    put<std::uint32_t>(out, interface_id);
    put_timestamp(out, s.end_ns);
    // isb_starttime/endtime are timestamps (two u32 halves), not plain u64s.
    std::vector<std::uint8_t> ts;
    put_timestamp(ts, s.start_ns);
    option(out, kIsbStartTime, ts.data(), ts.size());
    ts.clear();
    put_timestamp(ts, s.end_ns);
    option(out, kIsbEndTime, ts.data(), ts.size());
    option_u64(out, kIsbIfRecv, s.received);
    option_u64(out, kIsbOsDrop, s.kernel_drops);
    option_u64(out, kIsbUsrDeliv, s.delivered);
    end_options(out);
    b.close();
}

}  // namespace labctl::capture::pcapng
