"""A faithful Bitrix24 emulator: the portal's REST API and the OAuth server on one port.

It imports nothing from the gateway. Start it with ``b24gate sandbox`` or, in tests::

    async with SandboxServer(SandboxConfig(rate=0)) as sandbox:
        sandbox.base_url  # "http://127.0.0.1:PORT"

Its reading of Bitrix24's rules is offered too, for tests that hold the gateway to it: PHP
parameters (:func:`parse_php_query`, :func:`parse_php_pairs`, :func:`build_php_query`),
``batch`` (:func:`batch_commands`, :func:`resolve`, PHP's :func:`parse_url`), the two
limits (:class:`LeakyBucket`, :class:`OperatingBudget`) and a slow portal's latency
(:class:`Latency`). Its defaults (``DEFAULT_*``) and :func:`new_secret` are what
``b24gate sandbox`` and ``b24gate demo`` start it with.
"""

from ._batch import batch_commands, parse_url, resolve
from ._clock import Clock
from ._config import (
    DEFAULT_ACCESS_TTL,
    DEFAULT_BURST,
    DEFAULT_CLIENT_ID,
    DEFAULT_OPERATING_LIMIT,
    DEFAULT_RATE,
    DEFAULT_REFRESH_TTL,
    DEFAULT_REQUEST_TIME_LIMIT,
    DEFAULT_SCOPE,
    SandboxConfig,
    new_secret,
)
from ._errors import RestError
from ._faults import Fault
from ._latency import Latency
from ._limits import LeakyBucket, OperatingBudget
from ._params import build_php_query, parse_php_pairs, parse_php_query
from ._portal import Portal
from ._run import run
from ._server import SandboxServer

__all__ = [
    "DEFAULT_ACCESS_TTL",
    "DEFAULT_BURST",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_OPERATING_LIMIT",
    "DEFAULT_RATE",
    "DEFAULT_REFRESH_TTL",
    "DEFAULT_REQUEST_TIME_LIMIT",
    "DEFAULT_SCOPE",
    "Clock",
    "Fault",
    "Latency",
    "LeakyBucket",
    "OperatingBudget",
    "Portal",
    "RestError",
    "SandboxConfig",
    "SandboxServer",
    "batch_commands",
    "build_php_query",
    "new_secret",
    "parse_php_pairs",
    "parse_php_query",
    "parse_url",
    "resolve",
    "run",
]
