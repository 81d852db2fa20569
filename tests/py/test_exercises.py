"""The graded exercises of the courseware: in each lab that has one, the starting file
(exercise.json) scores less than full marks and the teacher's solution (solution.json)
scores full marks, every check holding. Root only; run from the repository root, as the
labs' READMEs say (daemons name repository paths)."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import LABCTL, ROOT
from labfix import netns_list, unique_name

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bringing labs up needs root")

EXERCISES = sorted(p.parent.name for p in (ROOT / "labs").glob("*/exercise.json"))


def test_at_least_three_labs_have_a_graded_exercise():
    assert len(EXERCISES) >= 3, EXERCISES
    for lab in EXERCISES:
        d = ROOT / "labs" / lab
        assert (d / "solution.json").is_file(), lab
        assert "## Your task" in (d / "README.md").read_text(), lab
        doc = json.loads((d / "exercise.json").read_text())
        assert any(c.get("points", 1) != 1 for c in doc["checks"]), f"{lab}: no check carries points"


def grade(tmp_path, lab, which):
    """Brings labs/LAB/WHICH.json up under a unique name; returns (exit code, report)."""
    doc = json.loads((ROOT / "labs" / lab / f"{which}.json").read_text())
    doc["name"] = unique_name("x")
    # Node commands run in the topology file's folder: the copy goes into a copy of the
    # lab's folder, so relative paths (the services lab's `www`) mean what they mean there.
    folder = tmp_path / f"{lab}-{which}"
    shutil.copytree(ROOT / "labs" / lab, folder)
    path = folder / f"{which}-{doc['name']}.json"
    path.write_text(json.dumps(doc))
    env = dict(os.environ, LABCTL_STATE_DIR=str(tmp_path / "state"))

    def labctl(*args):
        return subprocess.run([LABCTL, *map(str, args)], capture_output=True, text=True, timeout=120,
                              env=env, cwd=ROOT)

    try:
        r = labctl("up", path, "--json")
        assert r.returncode in (0, 1), r.stdout + r.stderr
        return r.returncode, json.loads(r.stdout)
    finally:
        assert labctl("down", doc["name"]).returncode == 0
        assert not [ns for ns in netns_list() if ns.startswith(doc["name"] + "-")]


@pytest.mark.parametrize("lab", EXERCISES)
def test_the_start_scores_less_than_full_and_the_solution_full(tmp_path, lab):
    code, start = grade(tmp_path, lab, "exercise")
    assert code == 1 and start["score"] < start["max_score"], start
    code, solved = grade(tmp_path, lab, "solution")
    failed = [c for c in solved["checks"] if not c["ok"]]
    assert code == 0 and not failed, failed
    assert solved["score"] == solved["max_score"] == start["max_score"]
