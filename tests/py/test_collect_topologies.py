"""The pytest plugin collects topology files: each check is a test item, the lab comes up
once per file, so `pytest topology.json --junitxml=r.xml` grades a lab. Run the way a user
would: an inner pytest in a subprocess (pytester)."""
import ast
import json
import os
import xml.etree.ElementTree as ET

import pytest

from labfix import lab_namespaces, netns_list, pair, run_plugin_pytest as run

pytest_plugins = ["pytester"]

# Every test runs an inner pytest that must import this session's labctl.
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="bringing labs up needs root"),
              pytest.mark.usefixtures("importable_labctl")]


GRADED = [
    {"name": "h2 answers", "from": "h1", "to": "h2", "points": 2},
    {"from": "h2", "to": "h1"},
    {"name": "the way out", "from": "h1", "to": "203.0.113.9", "points": 3},
    {"name": "h2 has its address", "on": "h2", "run": ["ip", "-o", "addr", "show", "dev", "eth0"],
     "expect_stdout": "10\\.0\\.0\\.2/24"},
    # The item of a command check that fails shows the reason and the output.
    {"on": "h1", "run": ["sh", "-c", "echo not configured; exit 5"]},
]


def test_a_topology_file_on_the_command_line_is_graded_with_junit(pytester, plugin_names):
    name = plugin_names()
    (pytester.path / "topology.json").write_text(json.dumps(pair(name, GRADED)))
    # A conftest that records every lab up while the items run: one lab, an instance of the
    # file's (`<its first 7 letters>-<unique>`, as fixture labs).
    pytester.makeconftest(f"""
        import labctl
        seen = []
        def pytest_runtest_call(item):
            seen.append(sorted(l["name"] for l in labctl.status()
                               if l["name"] == {name!r} or l["name"].startswith({name[:7]!r} + "-")))
        def pytest_sessionfinish(session):
            with open("seen.txt", "w") as f:
                f.write(repr(seen))
    """)
    result = run(pytester, "topology.json", "--junitxml=r.xml", "-v")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines([
        "*topology.json::h2 answers PASSED*",
        "*topology.json::h2 -> h1 PASSED*",
        "*topology.json::the way out FAILED*",
        "*the way out: Network is unreachable (ENETUNREACH)*",
        "*h1: sh -c echo not configured; exit 5: exited with 5, expected 0*",
        "*| not configured*",
    ])
    assert not lab_namespaces(name), "the lab stayed up after the file's last check"
    seen = ast.literal_eval((pytester.path / "seen.txt").read_text())
    assert len(seen) == 5 and all(len(s) == 1 and s == seen[0] for s in seen), seen
    assert seen[0][0].startswith(name[:7] + "-")

    root = ET.parse(pytester.path / "r.xml").getroot()
    cases = root.iter("testcase")
    by_name = {c.get("name"): c for c in cases}
    assert set(by_name) == {"h2 answers", "h2 -> h1", "the way out", "h2 has its address",
                            "h1: sh -c echo not configured; exit 5"}
    assert by_name["the way out"].find("failure") is not None
    assert by_name["h2 answers"].find("failure") is None
    points = {p.get("name"): p.get("value") for p in by_name["h2 answers"].iter("property")}
    assert points == {"points": "2"}


def test_the_ini_option_collects_matching_files(pytester, plugin_names):
    a, b = plugin_names(), plugin_names()
    (pytester.path / "labs" / "one").mkdir(parents=True)
    (pytester.path / "labs" / "two").mkdir(parents=True)
    (pytester.path / "labs" / "one" / "topology.json").write_text(json.dumps(pair(a)))
    (pytester.path / "labs" / "two" / "topology.json").write_text(json.dumps(pair(b, [
        {"from": "h1", "to": "h2"}, {"from": "h2", "to": "h1"}])))
    (pytester.path / "labs" / "two" / "other.json").write_text("{}")  # not matched: not collected
    pytester.makeini("""
        [pytest]
        labctl_topologies = labs/*/topology.json
    """)
    result = run(pytester, "-v")
    result.assert_outcomes(passed=3)
    assert not lab_namespaces(a) and not lab_namespaces(b)


def test_a_bad_topology_file_is_a_collection_error(pytester):
    (pytester.path / "bad.json").write_text(json.dumps({"name": "x", "nodes": {}, "links": [{"endpoints": []}]}))
    result = run(pytester, "bad.json")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*ERROR collecting bad.json*", "*/links/0/endpoints*"])


def test_xdist_workers_grade_one_file_and_a_lab_of_its_name_may_be_up(pytester, plugin_names):
    """`pytest -n 2` over a file's checks: each worker collects the file and brings up an
    instance of its own; a lab of the file's own name, up meanwhile, is not touched."""
    import labctl
    name = plugin_names()
    doc = pair(name, [{"from": "h1", "to": "h2"}, {"from": "h2", "to": "h1"},
                      {"name": "h1 has its address", "on": "h1", "run": ["ip", "-o", "addr", "show", "dev", "eth0"],
                       "expect_stdout": "10\\.0\\.0\\.1/24"}])
    (pytester.path / "topology.json").write_text(json.dumps(doc))
    mine = labctl.Lab(doc)
    mine.up()
    try:
        result = run(pytester, "topology.json", "-n", "2")
        result.assert_outcomes(passed=3)
        assert mine.is_up and mine.ping("h1", "h2", count=1).ok
    finally:
        mine.down()
    assert not lab_namespaces(name)
    assert not [n for n in netns_list() if n.startswith(name[:7] + "-")]
