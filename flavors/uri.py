"""Model URIs: a local directory as it is, ``file://`` paths, and everything else MLflow resolves
(``runs:/``, ``models:/``, ``s3://``, ``gs://``, ``dbfs:/``, ``http(s)://``...) downloaded through
``mlflow.artifacts.download_artifacts`` when mlflow is installed."""

from __future__ import annotations

import os
import re
from typing import Any, Optional

from .errors import ModelFormatError

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")


def is_remote_uri(uri: Any) -> bool:
    """True for a URI with a scheme other than file:// (a Windows drive letter is not a scheme)."""
    if not isinstance(uri, str):
        return False
    match = _SCHEME.match(uri)
    return match is not None and len(match.group(1)) > 1 and match.group(1).lower() != "file"


def resolve_model_uri(uri: Any, dst_path: Optional[str] = None) -> str:
    """A local directory (or file) for ``uri``: local paths as they are, ``file://`` stripped, other
    schemes downloaded by MLflow (to ``dst_path`` when given)."""
    if isinstance(uri, os.PathLike):
        return os.fspath(uri)
    if not isinstance(uri, str):
        raise ModelFormatError(f"a model URI must be a string or a path, got {type(uri).__name__}")
    if uri.startswith("file://"):
        return uri[len("file://") :]
    if not is_remote_uri(uri):
        return uri
    try:
        import mlflow.artifacts
    except ImportError:
        raise ModelFormatError(
            f"{uri}: URIs of this kind resolve through MLflow's client: pip install mlflow"
        ) from None
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst_path)
    except Exception as exc:
        raise ModelFormatError(f"{uri} could not be downloaded through MLflow: {type(exc).__name__}: {exc}") from exc
