"""The gateway's core: client access, tokens, the connect flow, the app's install events,
the call dispatcher, and bulk calls and list exports on top of it."""

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
from ._bulk import MAX_COMMANDS, BulkResult, Command, run_commands
from ._connect import Connected, ConnectError, Connector
from ._dispatcher import CallResult, Dispatcher, QueuePolicy, RetryPolicy, rest_base
from ._export import (
    MAX_PAGE_SIZE,
    ListQuery,
    Pager,
    decode_cursor,
    encode_cursor,
    list_query,
    read_page,
)
from ._gateway import Gateway
from ._install import EventRefused, EventUnverifiable, Installer
from ._tokens import TokenManager, TokenPolicy
from ._webhook import fix_for, webhook_fix

__all__ = [
    "MAX_COMMANDS",
    "MAX_PAGE_SIZE",
    "BulkResult",
    "CallResult",
    "Command",
    "ConnectError",
    "Connected",
    "Connector",
    "Dispatcher",
    "EventRefused",
    "EventUnverifiable",
    "Gateway",
    "Installer",
    "ListQuery",
    "NewKey",
    "Pager",
    "QueuePolicy",
    "RetryPolicy",
    "TokenManager",
    "TokenPolicy",
    "authenticate",
    "bearer",
    "decode_cursor",
    "encode_cursor",
    "fix_for",
    "hash_key",
    "key_id_of",
    "key_matches",
    "list_query",
    "new_key",
    "peer_address",
    "read_page",
    "rest_base",
    "run_commands",
    "webhook_fix",
]
