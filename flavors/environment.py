"""The environment files of a model directory: requirements.txt, python_env.yaml, conda.yaml and
environment_variables.txt, with requirements inferred from the model code's imports."""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import platform
import re
import sys
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Optional

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


CONSTRAINTS_FILE = "constraints.txt"


def write_environment(
    path: str, requirements: list[str], env_var_names: Iterable[str] = (), conda_env: Any = None
) -> None:
    """Write requirements.txt, python_env.yaml, conda.yaml (and environment_variables.txt if any).

    ``-c FILE`` entries (constraints) go to constraints.txt, referenced from requirements.txt as MLflow
    does. ``conda_env`` (a dict or a conda.yaml path) is written as the model's conda.yaml; its pip
    section then gives the requirements.
    """
    python = platform.python_version()
    requirements, constraints = split_constraints(requirements)
    if conda_env is not None:
        conda = read_conda_env(conda_env)
        pip_section = next(
            (d["pip"] for d in conda.get("dependencies", []) if isinstance(d, dict) and "pip" in d), None
        )
        if pip_section is not None:
            requirements, more = split_constraints(expand_requirements(list(pip_section)))
            constraints += more
        for dep in conda.get("dependencies", []):
            if isinstance(dep, str) and dep.replace(" ", "").startswith("python="):
                python = dep.split("=", 1)[1].strip()
    else:
        conda = {
            "channels": ["conda-forge"],
            "dependencies": [f"python={python}", "pip", {"pip": requirements}],
            "name": "servelm-env",
        }
    if constraints:
        with open(os.path.join(path, CONSTRAINTS_FILE), "w") as f:
            f.write("\n".join(constraints))
        requirements = requirements + [f"-c {CONSTRAINTS_FILE}"]
    with open(os.path.join(path, REQUIREMENTS_FILE), "w") as f:
        f.write("\n".join(requirements))
    python_env = {
        "python": python,
        "build_dependencies": ["pip", "setuptools", "wheel"],
        "dependencies": ["-r requirements.txt"],
    }
    with open(os.path.join(path, PYTHON_ENV_FILE), "w") as f:
        yaml.safe_dump(python_env, f, sort_keys=False)
    with open(os.path.join(path, CONDA_FILE), "w") as f:
        yaml.safe_dump(conda, f, sort_keys=False)
    names = sorted(set(env_var_names))
    if names:
        with open(os.path.join(path, ENV_VARS_FILE), "w") as f:
            f.write("# Environment variables the model read while it was validated at save time (names only)\n")
            f.write("\n".join(names) + "\n")


def read_conda_env(conda_env: Any) -> dict[str, Any]:
    """A conda environment given as a dict or as the path of a conda.yaml file."""
    if isinstance(conda_env, dict):
        return conda_env
    with open(os.fspath(conda_env)) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{conda_env} is not a conda environment file (a YAML mapping)")
    return data


def expand_requirements(requirements: Any, base_dir: Optional[str] = None) -> list[str]:
    """Requirement lines from a list or a requirements file path: ``-r FILE`` entries are read in their
    place (recursively), ``-c FILE`` entries become ``-c X`` lines, one per constraint the file lists
    (``split_constraints`` splits them off); comments and blank lines are dropped."""
    if isinstance(requirements, (str, os.PathLike)):
        file = os.fspath(requirements)
        with open(file) as f:
            return expand_requirements(f.read().splitlines(), os.path.dirname(os.path.abspath(file)))
    out: list[str] = []
    for raw in requirements:
        line = str(raw).split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^(-r|--requirement|-c|--constraint)\s*=?\s*(\S+)$", line)
        if match is None:
            out.append(line)
            continue
        flag, target = match.groups()
        if not os.path.isabs(target) and base_dir is not None:
            target = os.path.join(base_dir, target)
        if not os.path.isfile(target):
            raise ValueError(f"requirements entry {line!r}: {target} not found")
        lines = expand_requirements(target)
        out += (
            lines
            if flag in ("-r", "--requirement")
            else [f"-c {entry}" for entry in lines if not entry.startswith("-c ")]
        )
    return out


def split_constraints(lines: list[str]) -> tuple[list[str], list[str]]:
    """(requirements, constraints) from expanded lines (constraints are the ``-c X`` lines)."""
    requirements = [line for line in lines if not line.startswith("-c ")]
    constraints = [line[3:] for line in lines if line.startswith("-c ")]
    return requirements, constraints


def merge_requirements(inferred: list[str], pip_requirements: Any, extra: Any) -> list[str]:
    """``pip_requirements`` replaces the inferred list; ``extra_pip_requirements`` is appended to it. Each
    may be a list or the path of a requirements file (``-r`` / ``-c`` entries followed)."""
    base = expand_requirements(pip_requirements) if pip_requirements is not None else list(inferred)
    for req in expand_requirements(extra) if extra is not None else []:
        if req not in base:
            base.append(req)
    return base


class _RecordingEnviron(MutableMapping):
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

    def get(self, key: str, default: Any = None) -> Any:
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
    # swapped on purpose, restored below
    os.environ = _RecordingEnviron(real, seen)  # type: ignore[assignment]  # noqa: B003
    try:
        yield seen
    finally:
        os.environ = real  # noqa: B003


def requirement_mismatches(path: str) -> list[str]:
    """The model directory's requirements (requirements.txt) this Python environment does not satisfy, as
    ``name (current: X, required: spec)``; lines that are not plain requirements (files, URLs) are skipped."""
    from packaging.requirements import InvalidRequirement, Requirement

    file = os.path.join(path, "requirements.txt")
    if not os.path.isfile(file):
        return []
    mismatches = []
    with open(file) as f:
        lines = [line.strip() for line in f]
    for line in lines:
        if not line or line.startswith(("#", "-")):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed: Optional[str] = md.version(requirement.name)
        except md.PackageNotFoundError:
            installed = None
        if installed is None or (
            requirement.specifier and not requirement.specifier.contains(installed, prereleases=True)
        ):
            mismatches.append(f"{requirement.name} (current: {installed or 'uninstalled'}, required: {line})")
    return mismatches


def warn_environment_mismatches(path: str, python_version: Optional[str]) -> None:
    """Warn, as MLflow's load_model does, when the model was saved for other packages or another Python."""
    import logging

    log = logging.getLogger("servelm.pyfunc")
    mismatches = requirement_mismatches(path)
    if mismatches:
        log.warning(
            "the model's dependencies do not match this Python environment:\n - %s\nInstall them with "
            "`pip install -r %s` (servelm.flavors.pyfunc.get_model_dependencies gives the file).",
            "\n - ".join(mismatches),
            os.path.join(path, "requirements.txt"),
        )
    if python_version and python_version.split(".")[:2] != platform.python_version().split(".")[:2]:
        log.warning(
            "the model was saved with Python %s and this is Python %s: it may not load or behave the same",
            python_version,
            platform.python_version(),
        )
