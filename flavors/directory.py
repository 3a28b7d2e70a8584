"""Writing a model directory so that it is complete or absent: everything goes into a scratch directory
beside it, renamed into place only when all of it was written."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

from .errors import ModelFormatError


@contextlib.contextmanager
def new_model_directory(path: str) -> Iterator[str]:
    """Yield a scratch directory that becomes ``path`` when the block succeeds (removed when it fails)."""
    if os.path.exists(path) and os.listdir(path):
        raise ModelFormatError(f"{path} already exists and is not empty: choose a new directory")
    tmp = f"{os.path.abspath(path)}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
        if os.path.exists(path):
            os.rmdir(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
