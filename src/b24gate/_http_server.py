"""How the gateway's HTTP server (uvicorn) is set up: one place for ``serve``, ``demo`` and
the tests, so that no copy forgets a rule.

Two of uvicorn's defaults are unsafe for a service whose clients put keys in URLs
(Bitrix24's webhook-style ``/rest/<user>/<key>/…`` and ``?auth=…``) and whose client keys
may be limited by address:

- uvicorn writes an access line (the whole URL, query string included) whenever the
  ``uvicorn.access`` logger has a handler, whatever ``access_log=False`` says: the flag only
  clears the handlers present at start. A logging set-up added later (a log shipper, an
  error tracker, pytest's log capture since 9.2) brings the lines back. The gateway logs its
  own line per call, so the access line is redundant; :class:`AccessLineRedactor` makes it
  harmless whenever it does appear.
- uvicorn trusts ``X-Forwarded-For`` from 127.0.0.1 by default (``proxy_headers``,
  ``FORWARDED_ALLOW_IPS``) and rewrites the peer address before the gateway sees it. The
  gateway reads forwarded headers itself, only from ``B24GATE_TRUSTED_PROXIES``
  (:func:`b24gate.core.peer_address`), so uvicorn's handling is off.
"""

from __future__ import annotations

import logging
import random
import re
import socket
from typing import Any

import uvicorn

ACCESS_LOGGER = "uvicorn.access"

# What follows `/rest/` (or REST 3.0's `/rest/api/`), anywhere in a path and in any case:
# every segment but the last may be a webhook-style key (`/rest/<user id>/<key>/method`),
# and a key may come percent-encoded (`/rest/1%2F<key>/method`, which Starlette decodes).
_REST_TAIL = re.compile(r"(/rest/(?:api/)?)(.*)", re.IGNORECASE)
# The secret of the events handler's URL (`/bitrix/events/<secret>`).
_EVENTS_TAIL = re.compile(r"(/bitrix/events/)[^/]*", re.IGNORECASE)
# A client key wherever it stands, plain or with its `_`/`-` percent-encoded.
_KEY = re.compile(r"b24_[0-9a-f]{12}(?:_|%5f)(?:[A-Za-z0-9_-]|%5f|%2d){43}", re.IGNORECASE)
# A request target inside a rendered line: from a slash to the next space or double quote
# (uvicorn quotes the request line with double quotes; an apostrophe may be in the URL).
_TARGET = re.compile(r"/[^\s\"]*")
_MASK = "***"


def redact_target(target: str) -> str:
    """A request target fit for a log line: no query string, no key in the path."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    rest = _REST_TAIL.search(path)
    if rest is not None:
        *keys, last = rest.group(2).split("/")
        tail = "/".join([*(_MASK for _ in keys), last])
        path = path[: rest.start(2)] + tail
    path = _EVENTS_TAIL.sub(lambda m: m.group(1) + _MASK, path)
    path = _KEY.sub(_MASK, path)
    return path + ("?…" if "?" in target or "#" in target else "")


class AccessLineRedactor(logging.Filter):
    """Strips query strings and keys from uvicorn's access records.

    uvicorn logs ``'%s - "%s %s HTTP/%s" %d'`` with the request target as the third
    argument: that argument is redacted whole. Whatever the shape, the rendered line is
    then searched once more for targets and key-shaped text, so a future uvicorn that logs
    another shape cannot bring a raw URL or a key back.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], redact_target(args[2]), args[3], args[4])
            message = record.getMessage()
        else:
            message = _TARGET.sub(lambda m: redact_target(m.group(0)), record.getMessage())
        record.msg = _KEY.sub(_MASK, message)
        record.args = None
        return True


def protect_access_log() -> None:
    """Make uvicorn's access lines harmless, whatever handlers are attached later."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, AccessLineRedactor) for f in logger.filters):
        logger.addFilter(AccessLineRedactor())


def server_config(app: Any, host: str, port: int, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration every gateway server uses (``options``: TLS files and the
    like, passed through)."""
    protect_access_log()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        # Forwarded headers are read by the gateway, from trusted proxies only.
        proxy_headers=False,
        forwarded_allow_ips="",
        server_header=False,
        lifespan="on",
        **options,
    )


# Outgoing connections take their local port from the kernel's ephemeral range (Linux's
# net.ipv4.ip_local_port_range, 32768-60999 by default). A port chosen now for a server
# that binds it later is taken below that range, so that no client connection can be
# holding it by then (a listening bind fails on a port a connection uses).
_SERVER_PORTS = range(20_000, 32_768)
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` with nothing on it now, for a server started a moment later
    (tests, benchmarks); never the same one twice in a process."""
    chooser = random.SystemRandom()
    for _ in range(1000):
        port = chooser.choice(_SERVER_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port on {host} below the ephemeral range")
