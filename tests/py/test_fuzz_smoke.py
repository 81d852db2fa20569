"""The libFuzzer target for parse + validate (tests/fuzz) builds and survives a short run.

Needs clang with its libFuzzer runtime (Debian: clang, libclang-rt-14-dev; `make`
installs them); skipped without them, which fails a CI run (conftest.ALLOWED_SKIPS).
Builds in build-fuzz/ (what `make fuzz` uses, so a second run only
re-links), then fuzzes for LABCTL_FUZZ_SECONDS (20) over a copy of the seed corpus the
build makes from tests/data, labs/ and tests/fuzz/extra (build-fuzz/seed).
A crash, sanitizer report, timeout or out-of-memory fails the test; the input that
did it is kept in build-fuzz/ and named in the failure.
"""
import os
import shutil
import subprocess

import pytest

from conftest import ROOT

FUZZ_BUILD = ROOT / "build-fuzz"
SECONDS = int(os.environ.get("LABCTL_FUZZ_SECONDS", "20"))


def clang_with_libfuzzer():
    if shutil.which("clang++") is None:
        return False
    probe = subprocess.run(["clang++", "-fsanitize=fuzzer", "-x", "c++", "-", "-o", "/dev/null"],
                           input='extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) '
                                 '{ return 0; }\n', capture_output=True, text=True)
    return probe.returncode == 0


@pytest.mark.skipif(not clang_with_libfuzzer(), reason="clang++ with -fsanitize=fuzzer is not installed")
def test_topology_fuzzer_runs_without_crash(tmp_path):
    env = dict(os.environ, CXX="clang++")
    subprocess.run(["cmake", "-S", str(ROOT / "tests" / "fuzz"), "-B", str(FUZZ_BUILD)], env=env, check=True,
                   capture_output=True)
    b = subprocess.run(["cmake", "--build", str(FUZZ_BUILD), "-j", str(os.cpu_count() or 2)],
                       capture_output=True, text=True)
    assert b.returncode == 0, b.stdout[-3000:] + b.stderr[-3000:]
    corpus = tmp_path / "corpus"
    shutil.copytree(FUZZ_BUILD / "seed", corpus)
    seeds = {p.name for p in corpus.iterdir()}
    assert {"good-everything.json", "bad-syntax.json", "lab-quickstart.json", "number-overflow-crash"} <= seeds, seeds
    sources = [*(ROOT / "tests" / "data").glob("*/*.json"), *ROOT.glob("labs/*/topology.json"),
               *(ROOT / "tests" / "fuzz" / "extra").iterdir()]
    assert len(seeds) == len(sources), seeds
    r = subprocess.run([str(FUZZ_BUILD / "topology_fuzz"), f"-max_total_time={SECONDS}", "-timeout=10",
                        "-rss_limit_mb=2048", "-max_len=65536", f"-artifact_prefix={FUZZ_BUILD}/",
                        str(corpus)], capture_output=True, text=True, timeout=SECONDS + 120)
    assert r.returncode == 0, r.stderr[-5000:]
    assert "Done" in r.stderr, r.stderr[-2000:]
