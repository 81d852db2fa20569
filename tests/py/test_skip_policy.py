"""conftest's skip policy: in CI a skip not on ALLOWED_SKIPS fails the run and is named
in the summary; outside CI it is named and the run passes."""
import os
import subprocess
import sys

from conftest import ROOT


SOME = ("test_some.py", "import pytest\n"
                        "def test_runs():\n    pass\n"
                        "def test_skips():\n    pytest.skip('no reason to')\n")


def run_pytest(tmp_path, ci, files=(SOME,)):
    for name, text in files:
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "py"), env.get("PYTHONPATH", "")])
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "conftest",
                           "-q", "-rs", str(tmp_path)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


def test_an_unexpected_skip_fails_ci(tmp_path):
    r = run_pytest(tmp_path, ci=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 passed, 1 skipped" in r.stdout, r.stdout
    assert "SKIPPED test_some.py::test_skips: no reason to" in r.stdout, r.stdout
    assert "FAILED: in CI every test must run" in r.stdout, r.stdout


def test_outside_ci_a_skip_is_named_and_passes(tmp_path):
    r = run_pytest(tmp_path, ci=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SKIPPED test_some.py::test_skips: no reason to" in r.stdout, r.stdout


def test_an_allowed_skip_passes_ci(tmp_path):
    allowed = ("test_kernel_features.py",
               "import pytest\n"
               "def test_missing_feature_is_refused_before_anything_is_touched():\n"
               "    pytest.skip('this kernel has netem')\n")
    r = run_pytest(tmp_path, ci=True, files=[allowed])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 skipped" in r.stdout and "ALLOWED_SKIPS" not in r.stdout, r.stdout
