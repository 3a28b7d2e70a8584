"""The benchmark scripts run as real subprocesses in benchmarks/ (a few requests; no timing asserts)."""

import importlib.util
import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")


@pytest.fixture(scope="session")
def python_path() -> str:
    """This interpreter as an absolute path (the scripts run in benchmarks/: a relative one would break)."""
    return os.path.abspath(sys.executable)


@pytest.fixture(scope="session")
def run_script(python_path):
    """``run_script(*args, timeout=1800)``: run a benchmarks/ script with this interpreter; returns its stdout.
    The limit only catches a hang: the quick runs take seconds to a few minutes, longer on a busy machine."""

    def run(*args: str, timeout: float = 1800) -> str:
        proc = subprocess.run([python_path, *args], capture_output=True, text=True, timeout=timeout, cwd=BENCH)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    return run


@pytest.fixture(scope="session")
def has_module():
    """``has_module(name)``: whether ``name`` is importable here."""
    return lambda module: importlib.util.find_spec(module) is not None
