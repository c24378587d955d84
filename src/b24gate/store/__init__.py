"""The store: portals (OAuth or incoming webhook), their encrypted OAuth grants, client keys,
one-time tickets and states, and the cross-process refresh lock, on SQLite or PostgreSQL.

    cipher = Cipher(load_master_key(data_dir, env_value, key_file))
    store = await Store.open(database_url(data_dir, url), cipher)
"""

# The store's own errors belong to the one tree (b24gate.errors); also offered here.
from ..errors import LockTimeout, StoreConflict
from ._activity import ActivityStore, HourUsage, Refusal
from ._cache import ReadCache
from ._changes import ChangeWatch
from ._crypto import Cipher, key_id
from ._engine import (
    MIGRATIONS_DIR,
    REFRESH_LOCK_NAMESPACE,
    database_url,
    head_revision,
    make_engine,
    safe_url,
    schema_revision,
    upgrade,
    write_transaction,
)
from ._events import Event, EventStore, Head, NewEvent, Push, Subscription
from ._idempotency import Begun, IdempotencyStore, StoredAnswer
from ._jobs import JobCommand, JobInfo, JobResult, JobStore, NewJob, Runnable
from ._keyfile import (
    KEY_FILE_NAME,
    NEW_KEY_FILE_NAME,
    generate_key,
    install_new_key,
    load_master_key,
    read_key_file,
    write_key_file,
)
from ._rotate import CHUNK_ROWS, Rotation
from ._schema import SEALED, Sealed, metadata
from ._store import (
    Client,
    Grant,
    NewPortal,
    Portal,
    PortalChanges,
    PortalKind,
    PortalState,
    Store,
    TokenMethod,
    TokenTimes,
    store_key_id,
)

__all__ = [
    "CHUNK_ROWS",
    "KEY_FILE_NAME",
    "MIGRATIONS_DIR",
    "NEW_KEY_FILE_NAME",
    "REFRESH_LOCK_NAMESPACE",
    "SEALED",
    "ActivityStore",
    "Begun",
    "ChangeWatch",
    "Cipher",
    "Client",
    "Event",
    "EventStore",
    "Grant",
    "Head",
    "HourUsage",
    "IdempotencyStore",
    "JobCommand",
    "JobInfo",
    "JobResult",
    "JobStore",
    "LockTimeout",
    "NewEvent",
    "NewJob",
    "NewPortal",
    "Portal",
    "PortalChanges",
    "PortalKind",
    "PortalState",
    "Push",
    "ReadCache",
    "Refusal",
    "Rotation",
    "Runnable",
    "Sealed",
    "Store",
    "StoreConflict",
    "StoredAnswer",
    "Subscription",
    "TokenMethod",
    "TokenTimes",
    "database_url",
    "generate_key",
    "head_revision",
    "install_new_key",
    "key_id",
    "load_master_key",
    "make_engine",
    "metadata",
    "read_key_file",
    "safe_url",
    "schema_revision",
    "store_key_id",
    "upgrade",
    "write_key_file",
    "write_transaction",
]
