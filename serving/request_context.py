"""What the code handling a request knows about it without being passed it: its id (the ``x-request-id`` the
client sent, else a new one; answered in the response header, written in the access line and in any 500's
body) and whether error bodies may carry exception texts (``--expose-errors``). Set by ``logs.RequestLog``."""

from __future__ import annotations

import contextvars
import re
import uuid
from typing import Optional

_request_id: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("servelm_request_id", default=None)
_expose_errors: contextvars.ContextVar[bool] = contextvars.ContextVar("servelm_expose_errors", default=False)
_ACCEPTED_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")  # what a client's own id may look like (else a new one)


def start_request(client_id: Optional[str], expose_errors: bool) -> tuple[str, contextvars.Token[Optional[str]]]:
    """Begin a request's context: (its id, a token for ``end_request``)."""
    rid = client_id if client_id and _ACCEPTED_ID.fullmatch(client_id) else uuid.uuid4().hex
    _expose_errors.set(expose_errors)
    return rid, _request_id.set(rid)


def end_request(token: contextvars.Token[Optional[str]]) -> None:
    _request_id.reset(token)


def request_id() -> Optional[str]:
    """The id of the request being handled (None outside one)."""
    return _request_id.get()


def expose_errors() -> bool:
    """Whether error bodies may carry exception texts (``--expose-errors``)."""
    return _expose_errors.get()
