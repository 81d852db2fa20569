"""`labctl serve` and `labctl events`, end to end: a real server on loopback, a real headless
Chromium (Debian's chromium + chromium-driver, driven by python3-selenium), real labs whose
cables are pulled by hand inside their namespaces (`ip -n NS link set`), which the page must
show from netlink notifications within 2 s, without a reload.

The server and the labs live in a private state directory, so the page shows only this
module's labs; the server is started with `timeout` (it stops by itself even if pytest is
killed) and stopped by its PID at the end."""
import http.client
import json
import os
import queue
import re
import select
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import LABCTL, ROOT
from labfix import netns_list, unique_name

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bringing labs up needs root")

SERVER_LIFETIME_S = 300  # a bound on the server's life, whatever happens to pytest
CHROMEDRIVER = "/usr/bin/chromedriver"


def topology(name, impaired=True):
    """h1 -- r1 -- h2, the second link rate-limited (tbf: a kernel without netem has it)."""
    link2 = {"endpoints": ["r1:eth2", "h2:eth0"]}
    if impaired:
        link2["impair"] = {"rate_mbit": 100}
    return {
        "name": name,
        "description": "serve test lab",
        "nodes": {
            "h1": {"interfaces": {"eth0": {"addresses": ["10.0.1.10/24"]}},
                   "routes": [{"to": "default", "via": "10.0.1.1"}]},
            "r1": {"kind": "router",
                   "interfaces": {"eth1": {"addresses": ["10.0.1.1/24"]},
                                  "eth2": {"addresses": ["10.0.2.1/24"]}}},
            "h2": {"interfaces": {"eth0": {"addresses": ["10.0.2.10/24"]}},
                   "routes": [{"to": "default", "via": "10.0.2.1"}]},
        },
        "links": [{"endpoints": ["h1:eth0", "r1:eth1"]}, link2],
        "checks": [{"from": "h1", "to": "h2"},
                   {"from": "h1", "to": "192.0.2.9", "expect": "unreachable", "count": 1, "timeout_ms": 200}],
    }


class Env:
    def __init__(self, tmp):
        self.tmp = tmp
        self.env = dict(os.environ, LABCTL_STATE_DIR=str(tmp / "state"))
        self.labs = []

    def labctl(self, *args, timeout=120):
        return subprocess.run([LABCTL, *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env=self.env)

    def up(self, doc):
        path = self.tmp / f"{doc['name']}.json"
        path.write_text(json.dumps(doc))
        self.labs.append(doc["name"])
        r = self.labctl("up", path, "--no-verify")
        assert r.returncode == 0, r.stderr
        return doc["name"]

    def down(self, name):
        r = self.labctl("down", name)
        assert r.returncode == 0, r.stderr

    def cleanup(self):
        for name in self.labs:
            self.labctl("down", name)
            for ns in netns_list():
                if ns.startswith(name + "-"):
                    subprocess.run(["ip", "netns", "del", ns])


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env(tmp_path_factory.mktemp("serve"))
    try:
        yield e
    finally:
        e.cleanup()


def children_of(pid):
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            out += [int(p) for p in open(f"/proc/{pid}/task/{task}/children").read().split()]
        except OSError:
            pass
    return out


class Server:
    def __init__(self, proc, url):
        self.proc, self.url = proc, url
        m = re.match(r"http://([0-9.]+):(\d+)/", url)
        self.host, self.port = m.group(1), int(m.group(2))
        kids = children_of(proc.pid)
        self.pid = kids[0] if kids else proc.pid  # labctl itself, under timeout

    def request(self, method, path, headers=None, body=None):
        c = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            hdrs = {"Host": f"{self.host}:{self.port}"}
            hdrs.update(headers or {})
            for k, v in hdrs.items():
                c.putheader(k, v)
            if body is not None:
                c.putheader("Content-Length", str(len(body)))
            c.endheaders(body.encode() if body is not None else None)
            r = c.getresponse()
            return r.status, r.read().decode()
        finally:
            c.close()

    def token(self):
        status, page = self.request("GET", "/")
        assert status == 200
        return re.search(r'name="labctl-token" content="([0-9a-f]+)"', page).group(1)


@pytest.fixture(scope="module")
def server(env):
    proc = subprocess.Popen(["timeout", "-s", "TERM", str(SERVER_LIFETIME_S), LABCTL, "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env.env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "labctl serve did not say where it listens within 30 s"
        line = proc.stdout.readline()
        m = re.match(r"labctl serve: (http://127\.0\.0\.1:\d+/)$", line.strip())
        assert m, f"unexpected first line {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        yield Server(proc, m.group(1))
    finally:
        proc.terminate()  # our own PID: timeout passes the TERM on to labctl
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"labctl serve exited {proc.returncode}: {proc.stderr.read()}"


@pytest.fixture(scope="module")
def lab(env, server):
    return env.up(topology(unique_name("sv")))


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1400,900", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def wait_for(what, predicate, timeout):
    """Waits for predicate() to be truthy (it is cheap: a DOM read); returns it and the time taken."""
    start = time.monotonic()
    while True:
        v = predicate()
        if v:
            return v, time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


def attr(driver, css, name):
    """The attribute of the first element matching css, read in one step (elements are
    replaced as the page re-renders)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e && e.getAttribute(arguments[1]);", css, name)


def text(driver, css):
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e && e.innerText;", css)


def open_page(browser, server, lab):
    browser.get(server.url)
    wait_for("the lab on the page", lambda: attr(browser, f'[data-lab="{lab}"] [data-link]', "data-state"), 15)


# --- API -------------------------------------------------------------------------------

def test_api_is_status_json(env, server, lab):
    status, body = server.request("GET", "/api/labs")
    assert status == 200
    assert json.loads(body) == json.loads(env.labctl("status", "--json").stdout)
    status, body = server.request("GET", f"/api/labs/{lab}")
    assert status == 200
    assert json.loads(body) == json.loads(env.labctl("status", lab, "--json").stdout)
    status, body = server.request("GET", "/api/labs/nosuchlab")
    assert status == 404 and "not up" in json.loads(body)["error"]


@pytest.mark.parametrize("path", ["/../../../etc/passwd", "/etc/passwd", "/index.html", "/app.js/..",
                                  "/api/labs/../../etc/passwd", "/api/labs/%2e%2e", "/api", "/api/labs/x/y",
                                  "//etc/passwd", "/api/labs/NOPE"])
def test_paths_outside_the_app_are_404(server, path):
    status, body = server.request("GET", path)
    assert status == 404, (path, status, body)
    assert "root:" not in body


def test_post_needs_the_token_and_our_origin(server, lab):
    path = f"/api/labs/{lab}/checks"
    assert server.request("POST", path)[0] == 403
    assert server.request("POST", path, {"X-Labctl-Token": "0" * 32})[0] == 403
    token = server.token()
    assert server.request("POST", path, {"X-Labctl-Token": token, "Origin": "http://evil.example"})[0] == 403
    assert server.request("POST", path, {"X-Labctl-Token": token, "Sec-Fetch-Site": "cross-site"})[0] == 403
    # The same request from our own page's origin runs the checks.
    status, body = server.request("POST", path, {"X-Labctl-Token": token, "Origin": server.url.rstrip("/")})
    assert status == 200, body
    assert [c["ok"] for c in json.loads(body)["checks"]] == [True, True]
    # Everything else is read-only.
    assert server.request("PUT", f"/api/labs/{lab}")[0] == 405
    assert server.request("DELETE", f"/api/labs/{lab}")[0] == 405


def test_other_host_names_are_refused(server):
    # A page whose name was rebound to 127.0.0.1 (DNS rebinding) must not read us.
    assert server.request("GET", "/api/labs", {"Host": f"evil.example:{server.port}"})[0] == 403
    assert server.request("GET", "/api/labs", {"Host": f"localhost:{server.port}"})[0] == 200


def test_listens_on_loopback_only(server):
    conns = subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True).stdout
    mine = [line for line in conns.splitlines() if f"pid={server.pid}," in line]
    assert mine and all(f"127.0.0.1:{server.port}" in line for line in mine), mine


def test_bad_bind_and_busy_port(env):
    r = env.labctl("serve", "--bind", "example.org")
    assert r.returncode == 2 and "--bind" in r.stderr, r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = env.labctl("serve", "--port", port, timeout=30)
    assert r.returncode == 3
    assert f"labctl: listening on 127.0.0.1:{port}: Address already in use (EADDRINUSE)" in r.stderr, r.stderr


# --- the page --------------------------------------------------------------------------

def test_page_shows_live_link_state(browser, server, lab):
    open_page(browser, server, lab)
    sec = f'[data-lab="{lab}"]'
    for node in ("h1", "r1", "h2"):
        assert attr(browser, f'{sec} [data-node="{node}"]', "data-state") == "up"
    link = f'{sec} [data-link="h1:eth0 r1:eth1"]'
    assert attr(browser, link, "data-state") == "up"
    slow = f'{sec} [data-link="r1:eth2 h2:eth0"]'
    assert attr(browser, slow, "data-state") == "impaired"
    assert "rate 100 Mbit/s" in text(browser, f"{sec} table.links")

    # Pull the cable by hand inside the node: the page learns it from netlink. (At the
    # router's end: a host whose eth0 is set down loses its default route, which the
    # checks need later.)
    subprocess.run(["ip", "-n", f"{lab}-r1", "link", "set", "eth1", "down"], check=True)
    _, took = wait_for("link shown down", lambda: attr(browser, link, "data-state") == "down", 2)
    print(f"link down shown after {took:.3f} s")
    subprocess.run(["ip", "-n", f"{lab}-r1", "link", "set", "eth1", "up"], check=True)
    _, took = wait_for("link shown up again", lambda: attr(browser, link, "data-state") == "up", 5)
    print(f"link up shown after {took:.3f} s")
    # The impairment removed by hand: the link is plain up.
    subprocess.run(["tc", "-n", f"{lab}-h2", "qdisc", "del", "dev", "eth0", "root"], check=True)
    subprocess.run(["tc", "-n", f"{lab}-r1", "qdisc", "del", "dev", "eth2", "root"], check=True)
    wait_for("impairment gone", lambda: attr(browser, slow, "data-state") == "up", 2)
    assert "rate 100 Mbit/s" not in text(browser, f"{sec} table.links")
    # ... and back, on one end only: impaired again.
    subprocess.run(["tc", "-n", f"{lab}-h2", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "100mbit",
                    "burst", "32kb", "latency", "50ms"], check=True)
    wait_for("impairment back", lambda: attr(browser, slow, "data-state") == "impaired", 2)
    events = text(browser, f"{sec} ol.events")
    assert "r1:eth1 link down admin down" in events and "h1:eth0 link down no carrier" in events, events


def test_run_checks_from_the_page(browser, server, lab):
    open_page(browser, server, lab)
    sec = f'[data-lab="{lab}"]'
    browser.find_element("css selector", f"{sec} button.run-checks").click()
    results, took = wait_for("check results", lambda: browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.dataset.result)"
        ".filter((r) => r !== 'none')", f"{sec} tr.check"), 20)
    assert results == ["ok", "ok"]
    # The README's picture (LABCTL_SCREENSHOT=docs/serve.png pytest tests/py/test_serve.py):
    # checks run, one cable pulled, one link impaired.
    link = f'{sec} [data-link="h1:eth0 r1:eth1"]'
    subprocess.run(["ip", "-n", f"{lab}-r1", "link", "set", "eth1", "down"], check=True)
    try:
        wait_for("link shown down", lambda: attr(browser, link, "data-state") == "down", 2)
        png = browser.get_screenshot_as_png()
        assert png.startswith(b"\x89PNG")
        shot = os.environ.get("LABCTL_SCREENSHOT")
        if shot:
            (ROOT / shot).write_bytes(png)
    finally:
        subprocess.run(["ip", "-n", f"{lab}-r1", "link", "set", "eth1", "up"], check=True)
    wait_for("link shown up", lambda: attr(browser, link, "data-state") == "up", 5)


def test_many_pages_share_one_watcher(server, lab, browser):
    """Twenty open event streams cost twenty TCP sockets, and no netlink socket more."""
    def fds():
        return len(os.listdir(f"/proc/{server.pid}/fd"))
    before = fds()
    streams = []
    try:
        for _ in range(20):
            s = socket.create_connection((server.host, server.port), timeout=10)
            s.sendall(f"GET /api/events HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n\r\n".encode())
            streams.append(s)
        for s in streams:
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
        assert fds() - before == 20
        # The page still follows a pulled cable while they are open.
        open_page(browser, server, lab)
        link = f'[data-lab="{lab}"] [data-link="h1:eth0 r1:eth1"]'
        subprocess.run(["ip", "-n", f"{lab}-r1", "link", "set", "eth1", "down"], check=True)
        wait_for("link shown down", lambda: attr(browser, link, "data-state") == "down", 2)
        subprocess.run(["ip", "-n", f"{lab}-r1", "link", "set", "eth1", "up"], check=True)
        wait_for("link shown up", lambda: attr(browser, link, "data-state") == "up", 5)
    finally:
        for s in streams:
            s.close()


class Lines:
    """The lines a process prints, as they come (a thread reads them: select() on a
    buffered pipe misses lines already in Python's buffer)."""

    def __init__(self, proc):
        self.proc, self.q = proc, queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.q.put(line)
        self.q.put(None)

    def get(self, timeout):
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return ""

    def rest(self, timeout):
        out = []
        while (line := self.get(timeout)) is not None:
            assert line != "", "no end of output"
            out.append(line)
        return out


def read_event(lines, timeout, log=None):
    log = [] if log is None else log
    line = lines.get(timeout)
    assert line != "", f"no event within {timeout} s; before: {log}"
    assert line is not None, f"labctl events ended: {lines.proc.stderr.read()}"
    log.append(json.loads(line))
    return log[-1]


def test_events_and_a_lab_going_down(env, server, browser):
    """`labctl events` prints a pulled cable; a lab taken down leaves the page and ends
    its event stream."""
    name = env.up(topology(unique_name("sw"), impaired=False))
    open_page(browser, server, name)
    proc = subprocess.Popen(["timeout", "60", LABCTL, "events", name, "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env.env)
    lines = Lines(proc)
    try:
        first = read_event(lines, 15)
        assert (first["type"], first["action"], first["lab"]) == ("lab", "watching", name)
        subprocess.run(["ip", "-n", f"{name}-h2", "link", "set", "eth0", "down"], check=True)
        # Both ends report, each from its own namespace, in either order.
        seen, log = {}, []
        while len(seen) < 2:
            e = read_event(lines, 2, log)
            if e.get("type") == "link" and e.get("action") == "down":
                seen[(e["node"], e["interface"])] = e
        assert set(seen) == {("h2", "eth0"), ("r1", "eth2")}, seen
        assert seen[("h2", "eth0")]["detail"] == "admin down"
        assert seen[("r1", "eth2")]["detail"] == "no carrier"
        assert {e["link"] for e in seen.values()} == {"r1:eth2 h2:eth0"}

        # A node's namespace removed by hand: the node is missing, its link down.
        sec = f'[data-lab="{name}"]'
        subprocess.run(["ip", "-n", f"{name}-h2", "link", "set", "eth0", "up"], check=True)
        wait_for("link up", lambda: attr(browser, f'{sec} [data-link="r1:eth2 h2:eth0"]', "data-state") == "up", 5)
        subprocess.run(["ip", "netns", "del", f"{name}-h2"], check=True)
        wait_for("node shown missing", lambda: attr(browser, f'{sec} [data-node="h2"]', "data-state") == "missing", 2)
        assert attr(browser, f'{sec} [data-link="r1:eth2 h2:eth0"]', "data-state") == "down"
        assert attr(browser, f'{sec} [data-node="h1"]', "data-state") == "up"

        env.down(name)
        wait_for("lab gone from the page",
                 lambda: not browser.find_elements("css selector", f'[data-lab="{name}"]'), 3)
        rest = [json.loads(line) for line in lines.rest(10)]
        assert proc.wait(timeout=10) == 0
        assert rest[-1]["type"] == "lab" and rest[-1]["action"] == "down", rest
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    assert not [ns for ns in netns_list() if ns.startswith(name + "-")]


def test_events_text_and_errors(env, lab):
    r = env.labctl("events", "nosuchlab")
    assert r.returncode == 3 and "not up" in r.stderr
    proc = subprocess.Popen(["timeout", "60", LABCTL, "events", lab], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env.env)
    lines = Lines(proc)
    try:
        assert lines.get(15).rstrip().endswith(f"lab {lab} watching")
        subprocess.run(["ip", "-n", f"{lab}-h2", "addr", "add", "10.0.2.99/24", "dev", "eth0"], check=True)
        deadline = time.monotonic() + 2
        while True:
            line = lines.get(max(0.0, deadline - time.monotonic()))
            assert line, "no address event within 2 s"
            if "address added" in line:
                break
        assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} h2:eth0 address added 10\.0\.2\.99/24 \[r1:eth2 h2:eth0\]$",
                         line.rstrip()), line
    finally:
        proc.terminate()
        proc.wait()
