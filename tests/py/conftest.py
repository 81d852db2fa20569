"""Shared fixtures: where the labctl binary and the repository are."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LABCTL = os.environ.get("LABCTL", str(ROOT / "build" / "labctl"))


def run_labctl(*args, input=None, timeout=120, env=None):
    """Runs the CLI; returns the CompletedProcess (text mode)."""
    return subprocess.run([LABCTL, *map(str, args)], capture_output=True, text=True,
                          input=input, timeout=timeout, env=env)


@pytest.fixture
def labctl():
    return run_labctl
