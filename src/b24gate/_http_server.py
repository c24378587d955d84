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
import re
from typing import Any

import uvicorn

ACCESS_LOGGER = "uvicorn.access"

# `/rest/<user id>/<secret>/method` (a webhook-style key), REST 3.0's
# `/rest/api/<user id>/<secret>/method`, and both under /portals/<name>.
_PATH_SECRET = re.compile(r"(/rest/(?:api/|(?!api/))[^/?#]*/)[^/?#]+")


# A request target inside a log line: from a slash to the next space or quote.
_TARGET = re.compile(r"/[^\s\"']*")


def redact_target(target: str) -> str:
    """A request target fit for a log line: no query string, no key in the path."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    path = _PATH_SECRET.sub(r"\1***", path)
    return path + ("?…" if "?" in target else "")


class AccessLineRedactor(logging.Filter):
    """Strips query strings and path secrets from uvicorn's access records.

    The line is rendered and then redacted as text, rather than trusting the position of
    the target among the record's arguments, so a future uvicorn that logs another shape
    cannot bring a raw URL back.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = _TARGET.sub(lambda m: redact_target(m.group(0)), message)
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
