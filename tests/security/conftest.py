"""The attack tests run against the same stack as the API tests: a gateway on a real port
in front of a sandbox, both on loopback."""

from tests.api.conftest import (
    CLIENT_SECRET,
    MakeStack,
    Stack,
    _no_retry_waits,
    connected,
    logs,
    make_stack,
    stack,
    tls,
)

# Re-exported: pytest finds the fixtures by name here, the tests import the types.
__all__ = [
    "CLIENT_SECRET",
    "MakeStack",
    "Stack",
    "_no_retry_waits",
    "connected",
    "logs",
    "make_stack",
    "stack",
    "tls",
]
