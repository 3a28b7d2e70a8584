"""The environment files of a model directory: requirements.txt, python_env.yaml, conda.yaml and
environment_variables.txt, with requirements inferred from the model code's imports."""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import platform
import re
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Iterable, Optional

import yaml

REQUIREMENTS_FILE = "requirements.txt"
PYTHON_ENV_FILE = "python_env.yaml"
CONDA_FILE = "conda.yaml"
ENV_VARS_FILE = "environment_variables.txt"
SECRET_NAME = re.compile(r".*_API_(KEY|TOKEN)$")


def imported_modules(source: str) -> set[str]:
    """Top-level module names a Python source imports (absolute imports only)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def modules_of_object(obj: Any) -> set[str]:
    """Top-level modules imported by the source file that defines ``obj``'s class (or function)."""
    target = obj if callable(obj) and not hasattr(type(obj), "predict") else type(obj)
    module = sys.modules.get(getattr(target, "__module__", "") or "")
    file = getattr(module, "__file__", None)
    names = {target.__module__.split(".")[0]} if getattr(target, "__module__", None) else set()
    if file and file.endswith(".py") and os.path.isfile(file):
        with open(file) as f:
            names |= imported_modules(f.read())
    return names


def requirements_for_modules(modules: Iterable[str]) -> list[str]:
    """Pinned ``name==version`` requirements of the installed distributions providing ``modules``.

    Standard-library modules and modules without a distribution (local code) are skipped; servelm
    itself is always included.
    """
    from . import __version__

    dists = md.packages_distributions()
    found: dict[str, str] = {}
    for module in sorted(set(modules)):
        if module in sys.stdlib_module_names or module in ("servelm", "mlflow", "__main__"):
            continue
        for dist in dists.get(module, []):
            try:
                found[dist.lower()] = f"{dist}=={md.version(dist)}"
            except md.PackageNotFoundError:
                continue
    found.pop("servelm", None)
    return [f"servelm=={__version__}"] + [found[k] for k in sorted(found)]


def write_environment(path: str, requirements: list[str], env_var_names: Iterable[str] = ()) -> None:
    """Write requirements.txt, python_env.yaml, conda.yaml (and environment_variables.txt if any)."""
    python = platform.python_version()
    with open(os.path.join(path, REQUIREMENTS_FILE), "w") as f:
        f.write("\n".join(requirements))
    python_env = {"python": python, "build_dependencies": ["pip", "setuptools", "wheel"], "dependencies": ["-r requirements.txt"]}
    with open(os.path.join(path, PYTHON_ENV_FILE), "w") as f:
        yaml.safe_dump(python_env, f, sort_keys=False)
    conda = {"channels": ["conda-forge"], "dependencies": [f"python={python}", "pip", {"pip": requirements}], "name": "servelm-env"}
    with open(os.path.join(path, CONDA_FILE), "w") as f:
        yaml.safe_dump(conda, f, sort_keys=False)
    names = sorted(set(env_var_names))
    if names:
        with open(os.path.join(path, ENV_VARS_FILE), "w") as f:
            f.write("# Environment variables the model read while it was validated at save time (names only)\n")
            f.write("\n".join(names) + "\n")


def merge_requirements(inferred: list[str], pip_requirements: Optional[list[str]], extra: Optional[list[str]]) -> list[str]:
    """``pip_requirements`` replaces the inferred list; ``extra_pip_requirements`` is appended to it."""
    base = list(pip_requirements) if pip_requirements is not None else list(inferred)
    for req in extra or []:
        if req not in base:
            base.append(req)
    return base


class _RecordingEnviron(MutableMapping):  # type: ignore[type-arg]
    """os.environ stand-in that remembers which secret-looking names were read."""

    def __init__(self, real: Any, seen: set[str]):
        self._real = real
        self._seen = seen

    def _note(self, key: str) -> None:
        if isinstance(key, str) and SECRET_NAME.match(key):
            self._seen.add(key)

    def __getitem__(self, key: str) -> str:
        self._note(key)
        return self._real[key]

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self._note(key)
        return self._real.get(key, default)

    def __contains__(self, key: object) -> bool:
        self._note(key)  # type: ignore[arg-type]
        return key in self._real

    def __setitem__(self, key: str, value: str) -> None:
        self._real[key] = value

    def __delitem__(self, key: str) -> None:
        del self._real[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._real)

    def __len__(self) -> int:
        return len(self._real)

    def copy(self) -> dict[str, str]:
        return dict(self._real)


@contextmanager
def record_secret_env_reads() -> Iterator[set[str]]:
    """Within the block, collect names of ``*_API_KEY`` / ``*_API_TOKEN`` variables the code reads."""
    seen: set[str] = set()
    real = os.environ
    os.environ = _RecordingEnviron(real, seen)  # type: ignore[assignment]
    try:
        yield seen
    finally:
        os.environ = real  # type: ignore[assignment]
