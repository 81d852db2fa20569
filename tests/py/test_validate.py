"""`labctl validate` end to end, and the schema against an independent validator."""
import json
import math

import jsonschema
import pytest

from conftest import ROOT, run_labctl

DATA = ROOT / "tests" / "data"
SCHEMA = json.loads((ROOT / "topology-schemas" / "topology.schema.json").read_text())
GOOD = sorted((DATA / "good").glob("*.json"))
BAD = sorted((DATA / "bad").glob("*.json"))
LABS = sorted((ROOT / "labs").glob("*/topology.json"))


def expectations(path):
    lines = path.with_suffix(".expected").read_text().splitlines()
    schema = lines[0].removeprefix("# schema: ").strip()
    return schema, [line for line in lines[1:] if line.strip()]


def finite_float(text):
    """A JSON number a double holds; labctl refuses the others (1e999) as invalid JSON,
    where Python would read infinity."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number overflow: {text}")
    return value


def schema_valid(path):
    try:
        doc = json.loads(path.read_bytes(), parse_float=finite_float)
    except (ValueError, UnicodeDecodeError):
        return None
    return jsonschema.Draft7Validator(SCHEMA).is_valid(doc)


def test_schema_is_a_valid_draft7_schema():
    jsonschema.Draft7Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", GOOD + LABS, ids=lambda p: str(p.relative_to(ROOT)))
def test_good_files_validate(path):
    r = run_labctl("validate", path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    doc = json.loads(path.read_text())
    summary = r.stdout.strip()
    assert summary.count("\n") == 0

    def count(n, word):  # "1 node", "2 nodes"
        return f"{n} {word}" + ("" if n == 1 else "s")
    assert count(len(doc["nodes"]), "node") in summary
    assert count(len(doc.get("links", [])), "link") in summary
    assert count(len(doc.get("checks", [])), "check") in summary
    # The independent validator agrees.
    assert schema_valid(path) is True


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_files_are_rejected_with_every_error(path):
    schema, expected = expectations(path)
    r = run_labctl("validate", path)
    assert r.returncode == 2, r.stdout
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    for want in expected:
        assert any(line.startswith(f"labctl: {path}: ") and want in line for line in lines), \
            f"missing {want!r} in:\n{r.stderr}"
    # One line per problem, every line names the file.
    assert all(line.startswith(f"labctl: {path}: ") for line in lines)
    # Structural problems are the schema's: python-jsonschema must agree.
    verdict = schema_valid(path)
    if schema == "unparsable":
        assert verdict is None
    else:
        assert verdict is (schema == "valid"), f"jsonschema says valid={verdict}"


def test_unreadable_inputs_are_clean_errors(tmp_path):
    for target, words in [(tmp_path, "is a directory"),
                          (tmp_path / "missing.json", "No such file or directory (ENOENT)")]:
        r = run_labctl("validate", target)
        assert r.returncode == 2
        assert words in r.stderr
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    r = run_labctl("validate", deep, timeout=10)
    assert r.returncode == 2 and "nested deeper" in r.stderr
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(50 * 1024 * 1024)
    r = run_labctl("validate", big, timeout=10)
    assert r.returncode == 2 and "limited to" in r.stderr
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(bytes(range(256)) * 64)
    r = run_labctl("validate", garbage, timeout=10)
    assert r.returncode == 2 and "invalid JSON" in r.stderr


def test_usage_errors_exit_2():
    assert run_labctl().returncode == 2
    assert run_labctl("validate").returncode == 2
    assert run_labctl("frobnicate").returncode == 2
    assert run_labctl("ping", "lab").returncode == 2


def test_every_subcommand_has_help():
    for sub in ["validate", "up", "down", "status", "verify", "ping", "exec", "graph"]:
        r = run_labctl(sub, "--help")
        assert r.returncode == 0, sub
        assert "Usage" in r.stdout or "usage" in r.stdout.lower()
    r = run_labctl("--version")
    assert r.returncode == 0 and r.stdout.startswith("labctl ")
