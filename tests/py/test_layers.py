"""tools/check_layers.py: the include rule of core/ holds on the tree and a forbidden include fails."""
import importlib.util
import shutil
import subprocess
import sys

from conftest import ROOT

CHECK = ROOT / "tools" / "check_layers.py"


def run_check(root):
    return subprocess.run([sys.executable, str(CHECK), str(root)], capture_output=True, text=True)


def copy_tree(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "core", root / "core")
    shutil.copytree(ROOT / "python" / "src", root / "python" / "src")
    return root


def test_the_tree_keeps_the_rule():
    r = run_check(ROOT)
    assert r.returncode == 0, r.stderr


def test_a_lower_module_including_the_engine_fails(tmp_path):
    root = copy_tree(tmp_path)
    nl = root / "core" / "nl" / "nl.cpp"
    nl.write_text(nl.read_text() + '\n#include "engine/lab.hpp"\n')
    r = run_check(root)
    assert r.returncode == 1
    assert "core/nl/nl.cpp:" in r.stderr
    assert "nl/ must not include engine/" in r.stderr


def test_the_bindings_including_below_the_engine_fails(tmp_path):
    root = copy_tree(tmp_path)
    lab = root / "python" / "src" / "lab.cpp"
    lab.write_text('#include "rtnl/rtnl.hpp"\n' + lab.read_text())
    r = run_check(root)
    assert r.returncode == 1
    assert "python/src/lab.cpp:1: python/src/ must not include rtnl/" in r.stderr


def test_a_module_without_a_rule_fails(tmp_path):
    root = copy_tree(tmp_path)
    (root / "core" / "newmod").mkdir()
    (root / "core" / "newmod" / "newmod.cpp").write_text('#include "base/error.hpp"\n')
    r = run_check(root)
    assert r.returncode == 1
    assert "core/newmod/: a module with no rule" in r.stderr


def test_the_rule_has_no_cycle():
    spec = importlib.util.spec_from_file_location("check_layers", CHECK)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    done, active = set(), set()

    def visit(m, path):
        assert m not in active, "cycle: " + " -> ".join(path + [m])
        if m in done:
            return
        active.add(m)
        for dep in mod.ALLOWED[m]:
            visit(dep, path + [m])
        active.discard(m)
        done.add(m)

    for m in mod.ALLOWED:
        visit(m, [])
