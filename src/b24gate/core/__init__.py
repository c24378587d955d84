"""The gateway's core: client access, tokens, the connect flow, the app's install events and
the call dispatcher."""

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
from ._install import EventRefused, EventUnverifiable, Installer
from ._tokens import TokenManager, TokenPolicy
from ._webhook import fix_for, webhook_fix

__all__ = [
    "CallResult",
    "ConnectError",
    "Connected",
    "Connector",
    "Dispatcher",
    "EventRefused",
    "EventUnverifiable",
    "Gateway",
    "Installer",
    "NewKey",
    "RetryPolicy",
    "TokenManager",
    "TokenPolicy",
    "authenticate",
    "bearer",
    "fix_for",
    "hash_key",
    "key_id_of",
    "key_matches",
    "new_key",
    "peer_address",
    "rest_base",
    "webhook_fix",
]
