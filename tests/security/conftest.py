"""The attack tests run against the same stack as the API tests: a gateway on a real port
in front of a sandbox, both on loopback."""

from tests.api.conftest import (  # noqa: F401  (fixtures are found by name)
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
