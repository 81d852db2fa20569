"""The benchmark harness works: N = 10, one repetition, numbers come out, and no
namespace of it is left behind. Timings are not checked (benchmarks are not tests)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(ROOT, "bench", "run.py")


def _ours():
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return set()
    # bn<tool><topo>10-...: what a smoke run names its namespaces
    return {n for n in names if n.startswith("bn") and n.split("-")[0].endswith("10")}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_bench_smoke(tmp_path):
    labctl = os.environ.get("LABCTL", os.path.join(ROOT, "build", "labctl"))
    before = _ours()
    out, raw = tmp_path / "RESULTS.md", tmp_path / "rows.json"
    env = dict(os.environ, LABCTL=labctl)
    r = subprocess.run([sys.executable, RUN, "--smoke", "--topos", "star chain",
                        "--tools", "labctl labctl1 floor ipbatch",
                        "--out", str(out), "--json", str(raw)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = json.loads(raw.read_text())["rows"]
    for tool in ("labctl", "labctl1", "floor", "ipbatch"):
        for phase in ("up", "down"):
            got = [x for x in rows if x["tool"] == tool and x["phase"] == phase]
            if tool == "floor":
                got = [x for x in got if x["topo"] == "star"]
            assert got and all(x["seconds"] > 0 for x in got), (tool, phase)
    assert any(x["tool"] == "labctl" and x["phase"] == "verify" for x in rows)
    assert any(x["phase"] == "up" and x.get("rss_kb") for x in rows)
    text = out.read_text()
    assert "| labctl |" in text and "| labctl1 |" in text
    assert "## " in text and "observations" not in text.lower()  # generated only
    assert _ours() - before == set()
