"""Packet capture (docs/capture.md) end to end: `labctl capture`, lab.capture() and the pytest
plugin's --labctl-capture, every file read back with tshark (and, for the blocks tshark
does not show, with a few lines of pcapng parsing here).

One lab serves the module: h1 - r1 - sw1 - h2, r1 with a TUN (tun0)."""
import json
import re
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest

import labctl
from conftest import LABCTL, run_labctl
from labfix import lab_namespaces, netns_list, pair, unique_name

pytest_plugins = ["pytester"]

TSHARK = "tshark"


def topology(name):
    return {
        "name": name,
        "nodes": {
            "h1": {"interfaces": {"eth0": {"addresses": ["10.0.1.10/24"]}},
                   "routes": [{"to": "default", "via": "10.0.1.1"}]},
            "r1": {"kind": "router",
                   "interfaces": {"eth1": {"addresses": ["10.0.1.1/24"]},
                                  "eth2": {"addresses": ["10.0.2.1/24"]},
                                  "tun0": {"type": "tun", "addresses": ["10.0.9.1/24"]}}},
            "sw1": {"kind": "switch"},
            "h2": {"interfaces": {"eth0": {"addresses": ["10.0.2.10/24"]}},
                   "routes": [{"to": "default", "via": "10.0.2.1"}]},
        },
        "links": [{"endpoints": ["h1:eth0", "r1:eth1"]},
                  {"endpoints": ["r1:eth2", "sw1:p1"]},
                  {"endpoints": ["sw1:p2", "h2:eth0"]}],
        "checks": [{"from": "h1", "to": "h2"}],
    }


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    path = tmp_path_factory.mktemp("capture") / "topo.json"
    name = unique_name("cap")
    path.write_text(json.dumps(topology(name)))
    the_lab = labctl.Lab(str(path))
    try:
        the_lab.up()
        yield the_lab
    finally:
        labctl.down(name)
        assert not lab_namespaces(name)


# ---- reading files back ------------------------------------------------------------------

def tshark(path, *fields, filter=None):
    """One list of field values per packet, in file order. Fails on a damaged file."""
    args = [TSHARK, "-r", str(path), "-T", "fields", "-E", "separator=|"]
    for f in fields:
        args += ["-e", f]
    if filter:
        args += ["-Y", filter]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "cut short" not in r.stderr and "appears to be damaged" not in r.stderr, r.stderr
    return [line.split("|") for line in r.stdout.splitlines()]


def blocks(path):
    """The pcapng blocks of a file: [(type, body)], checking each block's framing."""
    data = open(path, "rb").read()
    out, at = [], 0
    while at < len(data):
        assert len(data) - at >= 12, "a truncated block at the end"
        btype, length = struct.unpack_from("<II", data, at)
        assert length % 4 == 0 and at + length <= len(data), f"bad block at {at}"
        assert struct.unpack_from("<I", data, at + length - 4)[0] == length
        out.append((btype, data[at + 8:at + length - 4]))
        at += length
    return out


def options(body, offset):
    """{code: [value, ...]} of the options from `offset` of a block body."""
    opts = {}
    while offset + 4 <= len(body):
        code, length = struct.unpack_from("<HH", body, offset)
        if code == 0:
            break
        opts.setdefault(code, []).append(body[offset + 4:offset + 4 + length])
        offset += 4 + (length + 3) // 4 * 4
    return opts


def interfaces(path):
    """[(name, linktype, tsresol)] of the interface description blocks."""
    out = []
    for btype, body in blocks(path):
        if btype == 1:
            linktype = struct.unpack_from("<H", body, 0)[0]
            opts = options(body, 8)
            out.append((opts[2][0].decode(), linktype, opts[9][0][0]))
    return out


def statistics(path):
    """{interface index: (ifrecv, osdrop, usrdeliv)} from the interface statistics blocks."""
    out = {}
    for btype, body in blocks(path):
        if btype == 5:
            opts = options(body, 12)
            out[struct.unpack_from("<I", body, 0)[0]] = tuple(
                struct.unpack("<Q", opts[c][0])[0] for c in (4, 7, 8))
    return out


# ---- running the CLI ---------------------------------------------------------------------

class Running:
    """`labctl capture` started in the background, returned once it is listening."""

    def __init__(self, *args, stdout=subprocess.DEVNULL):
        self.proc = subprocess.Popen([LABCTL, "capture", *map(str, args)], stdout=stdout,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        assert "listening on" in line, line + self.proc.stderr.read()

    def finish(self, sig=None, timeout=30):
        if sig is not None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.stderr = self.proc.stderr.read()
        return self.proc.returncode

    def counted(self, what):
        """N of the "N packets <what>" line on stderr."""
        for line in self.stderr.splitlines():
            if line.endswith(what):
                return int(line.split()[0])
        raise AssertionError(f"no '{what}' line in {self.stderr!r}")


def ping(lab, src, dst, count=2):
    assert lab.ping(src, dst, count=count, interval=0.05).ok


# ---- the command line --------------------------------------------------------------------

def test_one_file_named_interfaces_in_time_order_with_ns_stamps_and_sigint_completes_it(lab, tmp_path):
    out = tmp_path / "a.pcapng"
    names = ["h1:eth0", "r1:eth1", "r1:eth2", "sw1:br0", "h2:eth0"]
    cap = Running(lab.name, *names, "-w", out, "-f", "icmp")
    ping(lab, "h1", "h2", count=3)
    assert cap.finish(signal.SIGINT) == 0, cap.stderr

    assert [(n, lt, res) for n, lt, res in interfaces(out)] == [(n, 1, 9) for n in names]
    rows = tshark(out, "frame.interface_name", "frame.time_epoch", "icmp.type", "icmp.seq")
    assert len(rows) == 3 * 2 * len(names) == cap.counted("captured")
    stamps = [int(t.replace(".", "")) for _, t, _, _ in rows]  # nanoseconds since the epoch
    assert stamps == sorted(stamps)
    assert any(s % 1000 for s in stamps), "timestamps with nanosecond digits"
    # Causality shows the merge is in time order: each request crosses the lab h1 -> h2,
    # each reply h2 -> h1.
    for seq in ("1", "2", "3"):
        request = [i for i, t, ty, s in rows if ty == "8" and s == seq]
        reply = [i for i, t, ty, s in rows if ty == "0" and s == seq]
        assert request == names and reply == names[::-1], rows
    # SIGINT left a complete file: statistics blocks at the end, one per interface,
    # agreeing with what is in it.
    assert blocks(out)[-1][0] == 5
    stats = statistics(out)
    assert sorted(stats) == list(range(len(names)))
    assert all(recv == deliv == 6 and drop == 0 for recv, drop, deliv in stats.values())
    assert cap.counted("dropped by kernel") == 0
    assert "out of time order" not in cap.stderr


def test_count_stops_after_exactly_that_many_packets(lab, tmp_path):
    out = tmp_path / "c.pcapng"
    cap = Running(lab.name, "h1:eth0", "r1:eth1", "-w", out, "-c", 3, "-f", "icmp")
    ping(lab, "h1", "h2", count=2)
    assert cap.finish(timeout=10) == 0, cap.stderr  # ended by itself
    rows = tshark(out, "frame.interface_name", "icmp.type")
    assert rows == [["h1:eth0", "8"], ["r1:eth1", "8"], ["r1:eth1", "0"]]
    assert cap.counted("captured") == 3


def test_duration_stops_after_that_long_and_sigterm_completes_the_file(lab, tmp_path):
    out = tmp_path / "d.pcapng"
    start = time.monotonic()
    cap = Running(lab.name, "h2:eth0", "-w", out, "--duration", 1)
    assert cap.finish(timeout=10) == 0
    took = time.monotonic() - start
    assert 1.0 <= took < 5, took
    assert [n for n, _, _ in interfaces(out)] == ["h2:eth0"]
    tshark(out, "frame.number")  # readable

    out2 = tmp_path / "t.pcapng"
    cap = Running(lab.name, "h1:eth0", "-w", out2)
    ping(lab, "h1", "h2", count=1)
    assert cap.finish(signal.SIGTERM) == 0
    assert blocks(out2)[-1][0] == 5
    assert len(tshark(out2, "frame.number", filter="icmp")) == 2


def test_write_to_stdout_streams_into_a_reader(lab, tmp_path):
    # `labctl capture ... -w - | tshark -r -`: the reader sees packets while capture runs.
    reader = subprocess.Popen([TSHARK, "-l", "-r", "-", "-T", "fields", "-e", "frame.interface_name",
                               "-e", "icmp.type"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    cap = Running(lab.name, "r1:eth2", "-w", "-", "-f", "icmp[icmptype] == icmp-echoreply",
                  stdout=reader.stdin)
    reader.stdin.close()
    watchdog = threading.Timer(30, lambda: (reader.kill(), cap.proc.kill()))
    watchdog.start()
    try:
        ping(lab, "h1", "h2", count=2)
        # The filter let replies only through.
        assert [reader.stdout.readline(), reader.stdout.readline()] == ["r1:eth2\t0\n"] * 2
        assert cap.proc.poll() is None  # still capturing: the packets came as a stream
        assert cap.finish(signal.SIGINT) == 0, cap.stderr
        assert reader.stdout.read() == "" and reader.wait() == 0
    finally:
        watchdog.cancel()
    assert cap.counted("captured") == 2


def test_a_bad_filter_is_refused_with_libpcaps_message_before_capturing(lab, tmp_path):
    out = tmp_path / "bad.pcapng"
    r = run_labctl("capture", lab.name, "h1:eth0", "-w", out, "-f", "tcp port")
    assert r.returncode == 2
    assert 'filter "tcp port"' in r.stderr and "syntax error" in r.stderr
    assert not out.exists()
    # Filters compile per link type: an Ethernet filter cannot apply to the TUN.
    r = run_labctl("capture", lab.name, "r1:tun0", "-w", out, "-f", "ether host 02:00:00:00:00:01")
    assert r.returncode == 2 and "ether" in r.stderr.lower(), r.stderr
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["nosuchlab", "h1:eth0"], "lab nosuchlab is not up"),
    (["{lab}", "h9:eth0"], 'has no node "h9"'),
    (["{lab}", "h1:eth9"], 'node h1 has no interface "eth9"'),
    (["{lab}", "h1"], '"h1" is not NODE:IFNAME'),
    (["{lab}", "h1:eth0", "--all"], "not both"),
    (["{lab}"], "not both"),
])
def test_unknown_names_exit_2_and_capture_nothing(lab, tmp_path, args, message):
    out = tmp_path / "x.pcapng"
    r = run_labctl("capture", *[a.format(lab=lab.name) for a in args], "-w", out)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert not out.exists()


@pytest.mark.kernel("tun")
def test_a_tun_has_a_raw_ip_interface_block(lab, tmp_path):
    out = tmp_path / "tun.pcapng"
    cap = Running(lab.name, "r1:tun0", "r1:eth1", "-w", out, "-f", "icmp")
    # A program attaches to the TUN and sends echo requests from 10.0.9.2: the kernel
    # receives them on tun0 and answers back out of tun0. It repeats the request until a
    # reply comes: the TUN's carrier (and so its queue) comes up a moment after attaching.
    program = (
        "import fcntl, os, socket, struct, time\n"
        "fd = os.open('/dev/net/tun', os.O_RDWR | os.O_NONBLOCK)\n"
        "fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', b'tun0', 0x0001 | 0x1000))\n"
        "def csum(b):\n"
        "    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))\n"
        "    s = (s >> 16) + (s & 0xffff); s += s >> 16\n"
        "    return ~s & 0xffff\n"
        "def request(seq):\n"
        "    icmp = struct.pack('!BBHHH', 8, 0, 0, 7, seq) + b'labctl'\n"
        "    icmp = icmp[:2] + struct.pack('!H', csum(icmp)) + icmp[4:]\n"
        "    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(icmp), seq, 0, 64, 1, 0,\n"
        "                     socket.inet_aton('10.0.9.2'), socket.inet_aton('10.0.9.1'))\n"
        "    return ip[:10] + struct.pack('!H', csum(ip)) + ip[12:] + icmp\n"
        "deadline = time.monotonic() + 10\n"
        "seq = 0\n"
        "while time.monotonic() < deadline:\n"
        "    seq += 1\n"
        "    os.write(fd, request(seq))\n"
        "    until = time.monotonic() + 0.1\n"
        "    while time.monotonic() < until:\n"
        "        try:\n"
        "            packet = os.read(fd, 2048)\n"
        "        except BlockingIOError:\n"
        "            time.sleep(0.005)\n"
        "            continue\n"
        "        if packet[0] >> 4 == 4 and packet[9] == 1 and packet[20] == 0:\n"
        "            raise SystemExit(0)\n"
        "raise SystemExit('no echo reply')\n"
    )
    r = lab.exec("r1", [sys.executable, "-c", program], timeout=30)
    assert r.returncode == 0, r.stderr
    assert cap.finish(signal.SIGINT) == 0, cap.stderr

    assert interfaces(out) == [("r1:tun0", 101, 9), ("r1:eth1", 1, 9)]
    rows = tshark(out, "frame.interface_name", "frame.encap_type", "ip.src", "ip.dst", "icmp.type")
    assert ["r1:tun0", "7", "10.0.9.2", "10.0.9.1", "8"] in rows  # 7: Wireshark's raw IP
    assert ["r1:tun0", "7", "10.0.9.1", "10.0.9.2", "0"] in rows


# ---- Python --------------------------------------------------------------------------------

def test_python_context_manager_captures_until_the_block_ends(lab, tmp_path):
    out = tmp_path / "py.pcapng"
    with lab.capture(["h1:eth0", "r1:eth1"], out, filter="icmp") as cap:
        ping(lab, "h1", "h2", count=2)
    assert cap.stats.captured == 8 and cap.stats.kernel_drops == 0 and cap.stats.out_of_order == 0
    assert [i.captured for i in cap.stats.interfaces] == [4, 4]
    rows = tshark(out, "frame.interface_name", "icmp.type")
    assert rows.count(["h1:eth0", "8"]) == 2 and rows.count(["r1:eth1", "0"]) == 2
    assert cap.stop() is cap.stats  # stopping again changes nothing

    every = tmp_path / "all.pcapng"
    with lab.capture(labctl.ALL, every, count=1, filter="icmp") as cap:
        ping(lab, "h1", "h2", count=1)
        assert cap.wait(10)
    assert cap.stats.captured == 1
    # Every interface but lo and the switch's bridge (its ports carry the same frames).
    assert {n for n, _, _ in interfaces(every)} == {
        "h1:eth0", "r1:eth1", "r1:eth2", "r1:tun0", "sw1:p1", "sw1:p2", "h2:eth0"}

    with pytest.raises(labctl.LabError, match="syntax error"):
        lab.capture(["h1:eth0"], tmp_path / "bad.pcapng", filter="icmp and and")
    with pytest.raises(labctl.LabError, match='has no interface "nope"'):
        lab.capture(["h1:nope"], tmp_path / "bad.pcapng")
    assert not (tmp_path / "bad.pcapng").exists()


# ---- pytest plugin ---------------------------------------------------------------------------

def test_pytest_option_keeps_the_files_of_failed_tests_only(pytester, monkeypatch):
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(labctl.__file__)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([package_dir, os.environ.get("PYTHONPATH", "")]))
    a, b = unique_name("pc"), unique_name("pc")
    (pytester.path / "a.json").write_text(json.dumps(pair(a)))
    (pytester.path / "b.json").write_text(json.dumps(pair(b)))
    pytester.makepyfile(test_user="""
        import pytest

        @pytest.mark.lab("a.json")
        def test_passes(lab):
            assert lab.ping("h1", "h2", count=1).ok

        @pytest.mark.lab("a.json")
        def test_fails(lab):
            assert lab.ping("h1", "h2", count=1).ok
            assert False, "on purpose"

        def test_factory_fails(lab_factory):
            lab = lab_factory("b.json")
            assert lab.ping("h2", "h1", count=1).ok
            assert False, "on purpose"
    """)
    result = pytester.runpytest_subprocess("-p", "labctl.pytest_plugin", "-p", "no:cacheprovider",
                                           "--labctl-capture", "--labctl-capture-dir", "caps",
                                           timeout=300)
    result.assert_outcomes(passed=1, failed=2)
    # Fixture labs are instances named after the file's lab (`<first 7 letters>-<pid><n>`), so
    # the kept files are found by test name and checked against the lab name's stem.
    kept = sorted(p.name for p in (pytester.path / "caps").iterdir())
    assert len(kept) == 2, kept
    by_test = {}
    for name in kept:
        m = re.fullmatch(r"test_user\.py_(test_fails|test_factory_fails)--([a-z0-9-]+)\.pcapng", name)
        assert m, name
        by_test[m.group(1)] = m.group(2)
    assert by_test["test_fails"].startswith(a[:7].rstrip("-") + "-")
    assert by_test["test_factory_fails"].startswith(b[:7].rstrip("-") + "-")
    failed_file = f"test_user.py_test_fails--{by_test['test_fails']}.pcapng"
    factory_file = f"test_user.py_test_factory_fails--{by_test['test_factory_fails']}.pcapng"
    # Each failure report names its file.
    result.stdout.fnmatch_lines(["*labctl capture*",
                                 f"*packets of lab {by_test['test_fails']} during this test: *caps/{failed_file}"])
    rows = tshark(pytester.path / "caps" / failed_file, "frame.interface_name", "icmp.type", filter="icmp")
    assert ["h1:eth0", "8"] in rows and ["h2:eth0", "0"] in rows
    rows = tshark(pytester.path / "caps" / factory_file, "frame.interface_name", "icmp.type", filter="icmp")
    assert ["h2:eth0", "8"] in rows
    # The plugin took every instance down.
    left = [n for n in netns_list() if n.startswith(tuple(by_test.values()))]
    assert left == []


# ---- the benchmark harness ---------------------------------------------------------------------

def test_capture_bench_smoke(tmp_path):
    """bench/capture.py works on a small tree (numbers come out, nothing dropped, no
    namespace left); timings are not checked."""
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "bench", "capture.py")
    out = tmp_path / "RESULTS-capture.md"
    lab = unique_name("bncap")
    r = subprocess.run([sys.executable, bench, "--hosts", "4", "--fanout", "2", "--reps", "1",
                        "--out", str(out), "--labctl", LABCTL, "--lab", lab],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    text = out.read_text()
    assert "| packets dropped by the kernel (PACKET_STATISTICS) | 0 |" in text
    assert "| all-pairs passed while capturing | True |" in text
    captured = int(text.split("| packets captured | ")[1].split(" ")[0])
    assert captured > 0
    assert not lab_namespaces(lab)
