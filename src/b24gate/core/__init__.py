"""The gateway's core: client access, tokens, the connect flow and the call dispatcher."""

from ._access import (
    NewKey,
    authenticate,
    bearer,
    hash_key,
    key_id_of,
    key_matches,
    new_key,
    peer_address,
)
from ._connect import Connected, ConnectError, Connector
from ._dispatcher import CallResult, Dispatcher, RetryPolicy, rest_base
from ._gateway import Gateway
from ._tokens import TokenManager, TokenPolicy

__all__ = [
    "CallResult",
    "ConnectError",
    "Connected",
    "Connector",
    "Dispatcher",
    "Gateway",
    "NewKey",
    "RetryPolicy",
    "TokenManager",
    "TokenPolicy",
    "authenticate",
    "bearer",
    "hash_key",
    "key_id_of",
    "key_matches",
    "new_key",
    "peer_address",
    "rest_base",
]
