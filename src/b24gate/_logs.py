"""The gateway's log lines: text (``key=value``) or JSON lines, each with its request's id,
written from a thread of their own so the event loop never waits on a write.

A value a client chose (a client name, a method, a portal name) can hold spaces, quotes or
a newline; in text lines :func:`field` quotes it so that it cannot end the line or pose as
another field, and JSON lines carry each field as a JSON string.
"""

from __future__ import annotations

import atexit
import contextvars
import json
import logging
import logging.handlers
import queue
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, Literal

LogFormat = Literal["text", "json"]

# The id of the request being served: the client's own `X-Request-Id` when it sent a usable
# one, else one the gateway made. "-" outside a request.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("b24gate_request_id", default="-")

# A value that needs no quoting in a `key=value` line.
_BARE = re.compile(r"[A-Za-z0-9_.:/@+\-\[\]]+")


def field(value: object) -> str:
    """``value`` as it goes after ``key=`` in a text line: bare when it is plain, else a JSON
    string (quotes, backslashes and control characters escaped), so one line stays one
    line and one field stays one field."""
    text = value if isinstance(value, str) else str(value)
    if text and _BARE.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def fields_text(fields: Mapping[str, object]) -> str:
    """``key=value`` pairs, each value through :func:`field`."""
    return " ".join(f"{key}={field(value)}" for key, value in fields.items())


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request it was logged in."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", "-")
        return line if request_id == "-" else f"{line} request_id={field(request_id)}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request_id, and the record's
    ``fields`` (``extra={"fields": {...}}``) as keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "-")
        if request_id != "-":
            line["request_id"] = request_id
        extra = getattr(record, "fields", None)
        if isinstance(extra, Mapping):
            for key, value in extra.items():
                line.setdefault(str(key), value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


class _Handoff(logging.handlers.QueueHandler):
    """Hands records to the writer thread with their message merged, and nothing more: the
    line itself (time stamp and all) is formatted in that thread, off the event loop."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info:
            prepared: logging.LogRecord = super().prepare(record)  # render the traceback now
            return prepared
        record.msg = record.getMessage()
        record.args = None
        return record


def configure(level: str, fmt: LogFormat = "text") -> None:
    """Log lines to stderr, in ``fmt``, from a thread of their own."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, handler)
    listener.start()
    atexit.register(listener.stop)
    handoff = _Handoff(records)
    # The request id is read here, in the task that logged, before the record changes thread.
    handoff.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handoff)
    root.setLevel(level.upper())
    # Alembic's "Context impl SQLiteImpl." chatter on every start would precede a start-up
    # error (a foreign master key), which should be one line on stderr.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
