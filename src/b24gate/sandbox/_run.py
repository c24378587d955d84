"""Running the sandbox from the command line until interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from ._config import SandboxConfig
from ._server import SandboxServer


async def _serve(config: SandboxConfig) -> None:
    server = SandboxServer(config)
    base_url = await server.start()
    # The base URL alone on stdout, so `URL=$(b24gate sandbox … | head -1)` works.
    print(base_url, flush=True)
    print(
        f"sandbox: portal {server.portal.domain}, member_id {server.portal.member_id}, "
        f"client id {config.client_id}; control API at {base_url}/_sandbox/",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def run(config: SandboxConfig) -> None:
    """Serve until SIGINT/SIGTERM, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(_serve(config))
    else:
        uvloop.run(_serve(config))
