import re

import labctl

from conftest import ROOT, run_labctl


def project_version():
    """The version CMakeLists.txt's project() gives the build."""
    m = re.search(r"project\(labctl VERSION (\d+\.\d+\.\d+)", (ROOT / "CMakeLists.txt").read_text())
    assert m, "no project(labctl VERSION x.y.z) in CMakeLists.txt"
    return m[1]


def test_version_is_the_build_version():
    assert labctl.__version__ == project_version()
    r = run_labctl("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"labctl {project_version()}", r.stdout
