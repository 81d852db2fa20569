#!/usr/bin/python3
"""A tiny user-space network peer for the tun-vs-tap lab.

It attaches to an existing TUN or TAP device and plays "the machine behind it"
for one IPv4 address:

  --tap DEV   the device carries Ethernet frames (layer 2). The peer answers ARP
              requests for its address with its own MAC, and ICMP echo requests
              (ping) sent to it.
  --tun DEV   the device carries bare IPv4 packets (layer 3): no Ethernet header,
              no MAC addresses, no ARP. The peer answers ICMP echo requests.

Everything else is ignored. Python 3 standard library only; run it inside the
namespace that holds the device (labctl does, through the topology's daemons):

    python3 labs/tun-vs-tap/peer.py --tap tap0 --ip 10.0.2.2
    python3 labs/tun-vs-tap/peer.py --tun tun0 --ip 10.0.3.2

Attaching needs permission to open /dev/net/tun and the device (root, or the
uid/gid the device is owned by).
"""

import argparse
import fcntl
import ipaddress
import os
import signal
import struct
import sys

# From <linux/if_tun.h>.
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ARP_REQUEST = 1
ARP_REPLY = 2
ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
IPPROTO_ICMP = 1
BROADCAST = b"\xff" * 6


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's complement
    sum of 16-bit big-endian words, an odd last byte padded with zero."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def mac_bytes(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6:
        raise ValueError(f"{text!r} is not a MAC address like 02:00:0a:00:02:02")
    return bytes(int(p, 16) for p in parts)


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def default_mac(ip: bytes) -> bytes:
    """A locally administered unicast MAC made from the IPv4 address: 02:00:a.b.c.d."""
    return b"\x02\x00" + ip


def arp_reply(frame: bytes, mac: bytes, ip: bytes):
    """The Ethernet frame answering an ARP request for `ip` in `frame`, or None.

    ARP over Ethernet (RFC 826): htype 1, ptype 0x0800, hlen 6, plen 4, oper,
    sender MAC, sender IP, target MAC, target IP."""
    if len(frame) < 14 + 28:
        return None
    dst, src, ethertype = struct.unpack("!6s6sH", frame[:14])
    if ethertype != ETH_P_ARP or dst not in (BROADCAST, mac):
        return None
    htype, ptype, hlen, plen, oper, sha, spa, _tha, tpa = struct.unpack(
        "!HHBBH6s4s6s4s", frame[14:42])
    if (htype, ptype, hlen, plen, oper) != (1, ETH_P_IP, 6, 4, ARP_REQUEST) or tpa != ip:
        return None
    eth = struct.pack("!6s6sH", src, mac, ETH_P_ARP)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, ARP_REPLY, mac, ip, sha, spa)
    return eth + arp


def echo_reply(packet: bytes, ip: bytes):
    """The IPv4 packet answering an ICMP echo request to `ip`, or None.

    The reply keeps the request's identifier, sequence number and payload; the
    IP header is a fresh 20-byte one (options are not echoed)."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total_len = struct.unpack("!H", packet[2:4])[0]
    if ihl < 20 or total_len < ihl + 8 or total_len > len(packet):
        return None
    flags_frag = struct.unpack("!H", packet[6:8])[0]
    if flags_frag & 0x3FFF:  # a fragment (MF set or an offset): not reassembled here
        return None
    proto = packet[9]
    src, dst = packet[12:16], packet[16:20]
    if proto != IPPROTO_ICMP or dst != ip:
        return None
    if checksum(packet[:ihl]) != 0:
        return None
    icmp = packet[ihl:total_len]
    if icmp[0] != ICMP_ECHO_REQUEST or icmp[1] != 0 or checksum(icmp) != 0:
        return None
    body = struct.pack("!BBH", ICMP_ECHO_REPLY, 0, 0) + icmp[4:]
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    ident = struct.unpack("!H", packet[4:6])[0]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), ident, 0,
                         64, IPPROTO_ICMP, 0, ip, src)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + body


def tap_reply(frame: bytes, mac: bytes, ip: bytes):
    """What the peer sends back for one Ethernet frame read from a TAP, or None."""
    if len(frame) < 14:
        return None
    dst, src, ethertype = struct.unpack("!6s6sH", frame[:14])
    if ethertype == ETH_P_ARP:
        return arp_reply(frame, mac, ip)
    if ethertype == ETH_P_IP and dst in (mac, BROADCAST):
        reply = echo_reply(frame[14:], ip)
        if reply is not None:
            return struct.pack("!6s6sH", src, mac, ETH_P_IP) + reply
    return None


def tun_reply(packet: bytes, ip: bytes):
    """What the peer sends back for one IP packet read from a TUN, or None."""
    return echo_reply(packet, ip)


def describe(mode: str, request: bytes, reply: bytes) -> str:
    """One log line for an answered request."""
    if mode == "tap" and struct.unpack("!H", reply[12:14])[0] == ETH_P_ARP:
        spa = ipaddress.IPv4Address(request[28:32])
        tpa = ipaddress.IPv4Address(request[38:42])
        return f"arp: who-has {tpa} tell {spa} -> {tpa} is-at {mac_text(reply[6:12])}"
    packet = reply[14:] if mode == "tap" else reply
    ihl = (packet[0] & 0x0F) * 4
    seq = struct.unpack("!H", packet[ihl + 6:ihl + 8])[0]
    return (f"icmp: echo request from {ipaddress.IPv4Address(packet[16:20])} "
            f"seq {seq} -> reply")


def open_device(name: str, mode: str) -> int:
    """Attaches to the TUN/TAP device `name` in this network namespace."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    flags = (IFF_TAP if mode == "tap" else IFF_TUN) | IFF_NO_PI
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
    except OSError:
        os.close(fd)
        raise
    return fd


def serve(fd: int, mode: str, mac: bytes, ip: bytes, quiet: bool) -> None:
    while True:
        data = os.read(fd, 65536)
        reply = tap_reply(data, mac, ip) if mode == "tap" else tun_reply(data, ip)
        if reply is None:
            continue
        try:
            os.write(fd, reply)
        except OSError as e:  # e.g. EIO while the device is down: drop it, as a wire would
            print(f"peer: sending a reply: {e.strerror}", file=sys.stderr, flush=True)
            continue
        if not quiet:
            print(describe(mode, data, reply), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    device = parser.add_mutually_exclusive_group(required=True)
    device.add_argument("--tap", metavar="DEV", help="attach to this TAP device (Ethernet frames)")
    device.add_argument("--tun", metavar="DEV", help="attach to this TUN device (IP packets)")
    parser.add_argument("--ip", required=True, help="the IPv4 address the peer answers for")
    parser.add_argument("--mac", help="the peer's MAC on a TAP (default 02:00 + the IP's bytes)")
    parser.add_argument("--quiet", action="store_true", help="do not log answered requests")
    args = parser.parse_args(argv)

    try:
        ip = ipaddress.IPv4Address(args.ip).packed
    except ValueError as e:
        parser.error(str(e))
    mode = "tap" if args.tap else "tun"
    name = args.tap or args.tun
    if mode == "tun" and args.mac:
        parser.error("a TUN device has no MAC addresses; --mac is for --tap only")
    try:
        mac = mac_bytes(args.mac) if args.mac else default_mac(ip)
    except ValueError as e:
        parser.error(str(e))
    if len(name.encode()) > 15:
        parser.error(f"{name!r}: interface names are at most 15 bytes")

    # `labctl down` stops daemons with SIGTERM: leave quietly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        fd = open_device(name, mode)
    except OSError as e:
        print(f"peer: attaching to {mode.upper()} device {name}: {e.strerror} "
              f"(is it a {mode.upper()} in this namespace, and may we open it?)",
              file=sys.stderr)
        return 1
    where = f"{mode} {name}" + (f", MAC {mac_text(mac)}" if mode == "tap" else "")
    print(f"peer: answering for {args.ip} on {where}", flush=True)
    try:
        serve(fd, mode, mac, ip, args.quiet)
    except KeyboardInterrupt:
        pass
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
