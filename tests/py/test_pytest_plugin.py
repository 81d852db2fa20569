"""labctl.pytest_plugin used the way a user would: generated test files run by
`python3 -m pytest -p labctl.pytest_plugin` in a subprocess (pytester)."""
import json
import re

import pytest

import labctl
from labfix import lab_namespaces, netns_list, pair, run_plugin_pytest as run

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def inner_pytest_imports_this_labctl(importable_labctl):
    """Every test here runs an inner pytest (conftest.importable_labctl)."""


def write_topology(pytester, relpath, name, **kw):
    path = pytester.path / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(pair(name, **kw)))
    return path


def test_marker_brings_the_lab_up_and_removes_it(pytester, plugin_names):
    a, b = plugin_names(), plugin_names()
    write_topology(pytester, "labs/a.json", a)
    write_topology(pytester, "b.json", b)
    pytester.makepyfile(test_user=f"""
        import os, pytest

        @pytest.mark.lab("labs/a.json")
        def test_a(lab):
            assert lab.name.startswith({a!r} + "-") and lab.is_up
            assert lab.ping("h1", "h2", count=1).ok
            assert os.path.exists(f"/run/netns/{{lab.name}}-h1")

        @pytest.mark.lab("b.json", verify=False)
        def test_b(lab):
            assert lab.name.startswith({b!r} + "-") and lab.exec("h2", ["true"]).returncode == 0

        def test_without_marker(lab):
            pass
    """)
    result = run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*the `lab` fixture needs @pytest.mark.lab(TOPOLOGY)*"])
    assert not lab_namespaces(a) and not lab_namespaces(b)
    # The marker is registered: --strict-markers accepts it.
    assert "@pytest.mark.lab(topology" in run(pytester, "--markers").stdout.str()


def test_a_failing_test_still_removes_its_lab(pytester, plugin_names):
    a, b, c = plugin_names(), plugin_names(), plugin_names()
    write_topology(pytester, "a.json", a)
    write_topology(pytester, "c.json", c, checks=[{"from": "h1", "to": "h2", "expect": "unreachable"}])
    pytester.makepyfile(test_user=f"""
        import pytest

        @pytest.mark.lab("a.json")
        def test_fails(lab):
            assert lab.ping("h1", "203.0.113.9", count=1, timeout=0.2).ok

        @pytest.mark.lab("a.json")
        def test_errors(lab):
            raise RuntimeError("boom")

        def test_factory_fails(lab_factory):
            lab_factory({pair(b)!r})
            assert False

        @pytest.mark.lab("c.json")
        def test_check_fails(lab):
            pass
    """)
    result = run(pytester)
    result.assert_outcomes(failed=3, errors=1)
    result.stdout.fnmatch_lines(["*CheckFailed*1 of 1 checks failed*"])
    assert "kept lab" not in result.stdout.str()
    for name in (a, b, c):
        assert not lab_namespaces(name), name


def test_labctl_keep_keeps_only_failed_labs(pytester, plugin_names):
    a, b, c, d = plugin_names(), plugin_names(), plugin_names(), plugin_names()
    write_topology(pytester, "a.json", a)
    write_topology(pytester, "b.json", b)
    write_topology(pytester, "d.json", d, checks=[{"from": "h1", "to": "h2", "expect": "unreachable"}])
    pytester.makepyfile(test_user=f"""
        import pytest

        @pytest.mark.lab("a.json")
        def test_fails(lab):
            assert False

        @pytest.mark.lab("b.json")
        def test_passes(lab):
            pass

        def test_factory_fails(lab_factory):
            lab_factory({pair(c)!r})
            assert False

        @pytest.mark.lab("d.json")
        def test_check_fails(lab):
            pass
    """)
    try:
        result = run(pytester, "--labctl-keep")
        result.assert_outcomes(failed=2, passed=1, errors=1)
        out = result.stdout.str()
        for kept in (a, c, d):
            found = re.search(rf"kept lab ({kept}-\S+) up", out)
            assert found and f"labctl down {found[1]}" in out
            assert labctl.Lab.attach(found[1]).is_up
            assert len(lab_namespaces(kept)) == 2
        assert b not in out and not lab_namespaces(b)
    finally:
        for lab in labctl.status():
            if any(lab["name"].startswith(kept + "-") for kept in (a, c, d)):
                labctl.down(lab["name"])
    assert not any(lab_namespaces(n) for n in (a, b, c, d))


def test_lab_factory_builds_from_dicts_and_files(pytester, plugin_names):
    a, b, c = plugin_names(), plugin_names(), plugin_names()
    write_topology(pytester, "sub/b.json", b)
    pytester.makepyfile(test_user=f"""
        import labctl

        def test_factory(lab_factory):
            one = lab_factory({pair(a)!r})
            two = lab_factory("sub/b.json", verify=False)
            three = lab_factory({pair(c)!r}, up=False)
            assert one.is_up and two.is_up and not three.is_up
            assert one.ping("h1", "h2", count=1).ok and two.ping("h2", "h1", count=1).ok
            three.up()
            assert three.is_up
    """)
    run(pytester).assert_outcomes(passed=1)
    assert not any(lab_namespaces(n) for n in (a, b, c))


def test_module_scope_shares_one_lab(pytester, plugin_names):
    a, b = plugin_names(), plugin_names()
    write_topology(pytester, "a.json", a)
    write_topology(pytester, "b.json", b)
    pytester.makepyfile(test_shared="""
        import os, pytest

        pytestmark = pytest.mark.lab("a.json", scope="module")
        seen = []

        def inode(lab):
            return os.stat(f"/run/netns/{lab.name}-h1").st_ino

        def test_one(lab):
            lab.exec("h1", ["ip", "addr", "add", "10.0.0.99/32", "dev", "lo"], check=True)
            seen.append(inode(lab))

        def test_two(lab):
            assert "10.0.0.99" in lab.exec("h1", ["ip", "-br", "addr", "show", "lo"]).stdout
            seen.append(inode(lab))
            assert seen[0] == seen[1]
    """, test_other=f"""
        import os, pytest

        @pytest.mark.lab("b.json")
        def test_function_scope(lab):
            assert not [n for n in os.listdir("/run/netns") if n.startswith("{a}-")]  # module a's lab is gone
    """)
    run(pytester, "test_shared.py", "test_other.py").assert_outcomes(passed=3)
    assert not lab_namespaces(a) and not lab_namespaces(b)


@pytest.mark.parametrize("fixture", ["lab", "lab_factory"])
def test_ctrl_c_removes_the_lab(pytester, plugin_names, fixture):
    a = plugin_names()
    write_topology(pytester, "a.json", a)
    get = "lab" if fixture == "lab" else "lab_factory('a.json')"
    pytester.makepyfile(test_user=f"""
        import os, signal, time, pytest

        @pytest.mark.lab("a.json")
        def test_interrupted({fixture}):
            the_lab = {get}
            assert the_lab.is_up
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends
            time.sleep(5)
    """)
    result = run(pytester)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*KeyboardInterrupt*"])
    assert not lab_namespaces(a)


def test_ctrl_c_while_the_lab_comes_up_removes_it(pytester, plugin_names):
    name = plugin_names("s")
    nodes = {"sw": {"kind": "switch"}}
    for i in range(1, 40):
        nodes[f"h{i}"] = {"interfaces": {"eth0": {"addresses": [f"10.1.0.{i}/24"]}}}
    topo = {"name": name, "nodes": nodes,
            "links": [{"endpoints": [f"sw:p{i}", f"h{i}:eth0"]} for i in range(1, 40)]}
    (pytester.path / "star.json").write_text(json.dumps(topo))
    body = pytester.path / "body-ran"
    pytester.makepyfile(test_user=f"""
        import os, signal, threading, time, pytest

        def interrupt_when_the_lab_appears():
            # Ctrl-C once the first namespace of the lab exists: while it comes up.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if any(n.startswith("{name}-") for n in os.listdir("/run/netns")):
                        break
                except FileNotFoundError:
                    pass
                time.sleep(0.001)
            os.kill(os.getpid(), signal.SIGINT)

        @pytest.fixture
        def interrupt_soon():
            threading.Thread(target=interrupt_when_the_lab_appears, daemon=True).start()

        @pytest.mark.lab("star.json")
        def test_interrupted(interrupt_soon, lab):
            open("{body}", "w").close()
            time.sleep(10)
    """)
    result = run(pytester)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert not body.exists(), "the interrupt came after the lab was up"
    assert not lab_namespaces(name)


def test_fixture_labs_of_one_file_get_names_of_their_own(pytester, plugin_names):
    a = plugin_names()
    write_topology(pytester, "a.json", a)
    pytester.makepyfile(test_user="""
        import pytest

        @pytest.mark.lab("a.json")
        def test_twice(lab, lab_factory):
            other = lab_factory("a.json")
            assert other.name != lab.name
            assert lab.ping("h1", "h2", count=1).ok and other.ping("h1", "h2", count=1).ok
    """)
    run(pytester).assert_outcomes(passed=1)
    assert not lab_namespaces(a)


def test_xdist_workers_bring_up_one_file_side_by_side(pytester, plugin_names):
    """`pytest -n 4` on tests that share one topology file: each worker's fixture lab has a
    name of its own, all four are up at once, and none is left afterwards."""
    a = plugin_names()
    write_topology(pytester, "a.json", a)
    out = pytester.path / "seen"
    out.mkdir()
    pytester.makepyfile(test_user=f"""
        import os, time
        import pytest

        @pytest.mark.parametrize("i", range(4))
        @pytest.mark.lab("a.json")
        def test_one(lab, i):
            (open(os.path.join({str(out)!r}, str(i)), "w")
             .write(lab.name + " " + str(os.getpid()) + " " + os.environ.get("PYTEST_XDIST_WORKER", "")))
            # Stay up until every worker has its lab (or time is up): they coexist.
            deadline = time.monotonic() + 60
            while len(os.listdir({str(out)!r})) < 4 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert lab.ping("h1", "h2", count=1).ok
    """)
    result = run(pytester, "-n", "4")
    result.assert_outcomes(passed=4)
    seen = [(out / str(i)).read_text().split() for i in range(4)]
    labs = {s[0] for s in seen}
    workers = {s[2] for s in seen}
    assert len(labs) == 4, seen
    assert len(workers) == 4, seen
    assert all(name.startswith(a[:7] + "-") for name in labs), seen
    assert not lab_namespaces(a)
    assert not [n for n in netns_list() if n.startswith(tuple(labs))]
