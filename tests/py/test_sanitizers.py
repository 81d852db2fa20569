"""Memory checks of the real binary: one `up` + `down` of a small lab under valgrind.

(The unit tests under ASan+UBSan are `make sanitize`, part of `make test`.) Skipped without valgrind.
"""
import shutil
import subprocess

import pytest

from conftest import LABCTL
from labfix import netns_list, unique_name

VALGRIND = ["valgrind", "-q", "--leak-check=full", "--errors-for-leak-kinds=definite", "--error-exitcode=99"]

SMALL = {
    "nodes": {"sw": {"kind": "switch"},
              "a": {"interfaces": {"eth0": {"addresses": ["10.9.0.1/24", "fd00:9::1/64"]}}},
              "b": {"interfaces": {"eth0": {"addresses": ["10.9.0.2/24"]}}}},
    "links": [{"endpoints": ["sw:p1", "a:eth0"]}, {"endpoints": ["sw:p2", "b:eth0"]}],
    "checks": [{"from": "a", "to": "b"}],
}


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_valgrind_finds_no_definite_leak_in_up_and_down(labs):
    path, name = labs.write(SMALL, name=unique_name("rl"))
    for cmd in (["up", str(path)], ["status", name], ["down", name]):
        r = subprocess.run(VALGRIND + [LABCTL, *cmd], capture_output=True, text=True, timeout=300)
        # valgrind's --error-exitcode is 99; a check that times out under valgrind's
        # slowness (exit 1) is no memory error.
        assert r.returncode in ((0, 1) if cmd[0] == "up" else (0,)), (cmd, r.stdout, r.stderr[-5000:])
        assert "definitely lost" not in r.stderr, r.stderr[-5000:]
    assert not [n for n in netns_list() if n.startswith(name + "-")]
