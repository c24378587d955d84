"""A faithful Bitrix24 emulator: the portal's REST API and the OAuth server on one port.

It imports nothing from the gateway. Start it with ``b24gate sandbox`` or, in tests::

    async with SandboxServer(SandboxConfig(rate=0)) as sandbox:
        sandbox.base_url  # "http://127.0.0.1:PORT"
"""

from ._clock import Clock
from ._config import SandboxConfig
from ._errors import RestError
from ._faults import Fault
from ._params import build_php_query, parse_php_query
from ._portal import Portal
from ._run import run
from ._server import SandboxServer

__all__ = [
    "Clock",
    "Fault",
    "Portal",
    "RestError",
    "SandboxConfig",
    "SandboxServer",
    "build_php_query",
    "parse_php_query",
    "run",
]
