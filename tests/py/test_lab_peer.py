"""labs/tun-vs-tap/peer.py: packet building (pure), and the real thing on a TAP and a
TUN in a namespace of the test's own (root only; no labctl involved)."""
import importlib.util
import os
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys

import pytest

from conftest import ROOT

PEER = ROOT / "labs" / "tun-vs-tap" / "peer.py"
_spec = importlib.util.spec_from_file_location("lab_peer", PEER)
peer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(peer)

IP = bytes([10, 0, 2, 2])
MAC = bytes.fromhex("020000000202")
HOST_IP = bytes([10, 0, 2, 10])
HOST_MAC = bytes.fromhex("02aabbccddee")


def ipv4_header(src, dst, payload_len, proto=1, ident=0x1234, flags_frag=0x4000, ttl=64):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, ident, flags_frag, ttl,
                    proto, 0, src, dst)
    return h[:10] + struct.pack("!H", peer.checksum(h)) + h[12:]


def echo_request(src=HOST_IP, dst=IP, ident=0x4242, seq=7, payload=b"hello, peer!", **kw):
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", peer.checksum(icmp)) + icmp[4:]
    return ipv4_header(src, dst, len(icmp), **kw) + icmp


def arp_request(target=IP, sender_ip=HOST_IP, sender_mac=HOST_MAC, dst=b"\xff" * 6):
    eth = struct.pack("!6s6sH", dst, sender_mac, 0x0806)
    return eth + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, sender_mac, sender_ip,
                             b"\x00" * 6, target)


# ---- pure: no privileges -------------------------------------------------------------

def test_checksum_rfc1071_example():
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum (with carries) to ddf2.
    assert peer.checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2
    # An odd length is padded with a zero byte.
    assert peer.checksum(b"\x01") == peer.checksum(b"\x01\x00")
    # A buffer carrying its own checksum sums to zero.
    h = ipv4_header(HOST_IP, IP, 8)
    assert peer.checksum(h) == 0


def test_arp_reply_format():
    reply = peer.tap_reply(arp_request(), MAC, IP)
    assert reply is not None and len(reply) == 42
    dst, src, ethertype = struct.unpack("!6s6sH", reply[:14])
    assert (dst, src, ethertype) == (HOST_MAC, MAC, 0x0806)
    htype, ptype, hlen, plen, oper, sha, spa, tha, tpa = struct.unpack(
        "!HHBBH6s4s6s4s", reply[14:])
    assert (htype, ptype, hlen, plen, oper) == (1, 0x0800, 6, 4, 2)
    assert (sha, spa, tha, tpa) == (MAC, IP, HOST_MAC, HOST_IP)
    # Also when asked by unicast (an ARP refresh).
    assert peer.tap_reply(arp_request(dst=MAC), MAC, IP) == reply


def test_arp_ignores_other_targets_and_replies():
    assert peer.tap_reply(arp_request(target=bytes([10, 0, 2, 3])), MAC, IP) is None
    other = arp_request(dst=bytes.fromhex("02000000ffff"))
    assert peer.tap_reply(other, MAC, IP) is None
    as_reply = bytearray(arp_request())
    as_reply[21] = 2  # oper = reply
    assert peer.tap_reply(bytes(as_reply), MAC, IP) is None
    assert peer.tap_reply(arp_request()[:41], MAC, IP) is None


def test_echo_reply_over_tun():
    req = echo_request(payload=b"x" * 57)  # an odd ICMP length exercises the padding
    reply = peer.tun_reply(req, IP)
    assert reply is not None and len(reply) == len(req)
    assert peer.checksum(reply[:20]) == 0
    assert reply[0] == 0x45 and reply[8] == 64 and reply[9] == 1
    assert reply[12:16] == IP and reply[16:20] == HOST_IP
    icmp = reply[20:]
    assert peer.checksum(icmp) == 0
    assert icmp[0] == 0 and icmp[1] == 0
    assert icmp[4:] == req[24:]  # identifier, sequence and payload echoed
    assert struct.unpack("!HH", icmp[4:8]) == (0x4242, 7)


def test_echo_reply_over_tap_is_addressed_to_the_sender():
    frame = struct.pack("!6s6sH", MAC, HOST_MAC, 0x0800) + echo_request()
    reply = peer.tap_reply(frame, MAC, IP)
    assert reply[:14] == struct.pack("!6s6sH", HOST_MAC, MAC, 0x0800)
    assert reply[14:] == peer.tun_reply(echo_request(), IP)
    # A frame for another MAC (flooded by a bridge) is not for us.
    other = struct.pack("!6s6sH", bytes.fromhex("02000000ffff"), HOST_MAC, 0x0800) + echo_request()
    assert peer.tap_reply(other, MAC, IP) is None


def test_echo_ignores_what_is_not_an_echo_request_to_us():
    assert peer.tun_reply(echo_request(dst=bytes([10, 0, 2, 3])), IP) is None
    reply = peer.tun_reply(echo_request(), IP)
    assert peer.tun_reply(reply, HOST_IP) is None  # an echo reply is not answered
    bad = bytearray(echo_request())
    bad[-1] ^= 0xFF  # ICMP checksum now wrong
    assert peer.tun_reply(bytes(bad), IP) is None
    bad = bytearray(echo_request())
    bad[10] ^= 0xFF  # IP header checksum now wrong
    assert peer.tun_reply(bytes(bad), IP) is None
    assert peer.tun_reply(echo_request(flags_frag=0x2000), IP) is None  # MF: a fragment
    assert peer.tun_reply(echo_request(proto=17), IP) is None
    assert peer.tun_reply(echo_request()[:27], IP) is None
    assert peer.tun_reply(b"\x60" + bytes(47), IP) is None  # IPv6


def test_default_mac_and_arguments():
    assert peer.default_mac(IP) == bytes.fromhex("02000a000202")
    assert peer.mac_text(peer.mac_bytes("02:00:0A:00:02:02")) == "02:00:0a:00:02:02"
    for argv in (["--ip", "10.0.2.2"], ["--tap", "tap0"], ["--tap", "t", "--tun", "u", "--ip", "10.0.0.1"],
                 ["--tun", "tun0", "--ip", "10.0.3.2", "--mac", "02:00:00:00:00:01"],
                 ["--tap", "tap0", "--ip", "fd00::1"], ["--tap", "x" * 16, "--ip", "10.0.0.1"]):
        with pytest.raises(SystemExit) as e:
            peer.main(argv)
        assert e.value.code == 2


# ---- privileged: a TAP and a TUN in a namespace of our own --------------------------

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/net/tun") or not shutil.which("ip")
    or not shutil.which("ping"),
    reason="needs root, /dev/net/tun, ip and ping")


def sh(*argv, check=True):
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)


@pytest.fixture
def netns():
    """A fresh namespace `lt-<random>`; yields (name, start) where start(argv) runs a
    command inside it in the background. Teardown kills exactly the processes it
    started and always removes the namespace."""
    name = f"lt-{secrets.token_hex(4)}"
    sh("ip", "netns", "add", name)
    started = []

    def start(argv):
        # `ip netns exec` execs the command itself, so this pid is the peer's.
        p = subprocess.Popen(["ip", "netns", "exec", name, *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        started.append(p)
        return p

    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        yield name, start
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            p.stdout.close()
            p.stderr.close()
        sh("ip", "netns", "del", name, check=False)
        assert name not in sh("ip", "netns", "list").stdout


def wait_ready(p, timeout=10.0):
    """Waits for the peer's first line ("peer: answering for ...")."""
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    assert ready, "peer.py did not start"
    line = p.stdout.readline()
    assert line.startswith("peer: answering for"), (line, p.stderr.read() if p.poll() is not None else "")
    return line


def ping(ns, addr, count=3):
    return sh("ip", "netns", "exec", ns, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1", addr,
              check=False)


@needs_root
def test_peer_answers_arp_and_ping_behind_a_tap(netns):
    ns, start = netns
    sh("ip", "-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap")
    sh("ip", "-n", ns, "addr", "add", "10.0.2.1/24", "dev", "tap0")
    sh("ip", "-n", ns, "link", "set", "tap0", "up")
    p = start([sys.executable, str(PEER), "--tap", "tap0", "--ip", "10.0.2.2"])
    assert "MAC 02:00:0a:00:02:02" in wait_ready(p)
    r = ping(ns, "10.0.2.2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bytes from 10.0.2.2" in r.stdout
    # The kernel learned the peer's MAC through ARP.
    neigh = sh("ip", "-n", ns, "neigh", "show", "10.0.2.2", "dev", "tap0").stdout
    assert "02:00:0a:00:02:02" in neigh
    # Nobody answers for a neighbour address.
    assert ping(ns, "10.0.2.3", count=1).returncode != 0
    # SIGTERM (what `labctl down` sends) ends it cleanly, and its log shows the work.
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0
    log = p.stdout.read()
    assert "arp: who-has 10.0.2.2 tell 10.0.2.1 -> 10.0.2.2 is-at 02:00:0a:00:02:02" in log
    assert "icmp: echo request from 10.0.2.1" in log


@needs_root
def test_peer_answers_ping_behind_a_tun(netns):
    ns, start = netns
    sh("ip", "-n", ns, "tuntap", "add", "dev", "tun0", "mode", "tun")
    sh("ip", "-n", ns, "addr", "add", "10.0.3.1/30", "dev", "tun0")
    sh("ip", "-n", ns, "link", "set", "tun0", "up")
    p = start([sys.executable, str(PEER), "--tun", "tun0", "--ip", "10.0.3.2", "--quiet"])
    wait_ready(p)
    r = ping(ns, "10.0.3.2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bytes from 10.0.3.2" in r.stdout
    # No ARP on a TUN: it is point-to-point, there is no neighbour table entry.
    assert sh("ip", "-n", ns, "neigh", "show", "dev", "tun0").stdout.strip() == ""
    assert ping(ns, "10.0.3.1", count=1).returncode == 0  # our own end, answered locally


@needs_root
def test_peer_refuses_the_wrong_device_type(netns):
    ns, start = netns
    sh("ip", "-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap")
    p = start([sys.executable, str(PEER), "--tun", "tap0", "--ip", "10.0.3.2"])
    assert p.wait(timeout=10) == 1
    assert "attaching to TUN device tap0" in p.stderr.read()
