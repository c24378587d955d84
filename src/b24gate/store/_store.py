"""The store: portals with their grants, client keys, one-time tickets and OAuth states.

Every method is one transaction. Secrets are sealed before they reach a statement and
opened only when a row is turned into a value object.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal, Self, TypedDict, Unpack, get_args

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..bitrix import (
    DEFAULT_PLAN,
    PLANS,
    check_burst,
    check_rate,
    oauth_address,
    portal_address,
    webhook_address,
)
from ..errors import ConfigError, StoreConflict, UnknownPortal
from ._activity import ActivityStore
from ._changes import ChangeWatch
from ._crypto import KEY_MISMATCH, Cipher, blob_key_id
from ._engine import (
    Dialect,
    dialect_of,
    make_engine,
    patiently,
    safe_url,
    upgrade,
    write_transaction,
)
from ._events import EventStore
from ._idempotency import IdempotencyStore
from ._jobs import JobStore
from ._locks import (
    announce_serving,
    refresh_lock,
    serving,
    sign_out,
    signed_out,
    withdraw_serving,
)
from ._rotate import CHUNK_ROWS, Rotation, reseal
from ._schema import client_portals, clients, grants, meta, oauth_states, portals, tickets

PortalState = Literal["connected", "needs_authorization", "not_connected"]
TokenMethod = Literal["POST", "GET"]
# "oauth": calls carry the grant's access token; "webhook": calls go to an incoming webhook
# URL, which carries its own secret in its path (docs/protocol.md §2.1, §3.1).
PortalKind = Literal["oauth", "webhook"]

_STATES: Final = frozenset(get_args(PortalState))
_TOKEN_METHODS: Final = frozenset(get_args(TokenMethod))
_KINDS: Final = frozenset(get_args(PortalKind))
_KEY_CHECK: Final = "b24gate master key check"
# A portal's request budget unless it is given one: most portals' plan.
_DEFAULT_BUDGET: Final = PLANS[DEFAULT_PLAN]


@dataclass(frozen=True)
class NewPortal:
    """A portal as the administrator registers it.

    An OAuth portal (``kind="oauth"``) needs ``client_id``, ``client_secret`` and
    ``oauth_url``; a webhook portal (``kind="webhook"``) needs ``webhook_url`` instead, and
    is connected from the start.
    """

    name: str
    url: str
    domain: str
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    oauth_url: str = ""
    scope: str = ""
    token_method: str = "POST"  # noqa: S105  (an HTTP method, "POST" or "GET")
    kind: str = "oauth"
    webhook_url: str | None = field(default=None, repr=False)
    rate: float = _DEFAULT_BUDGET.rate
    burst: int = _DEFAULT_BUDGET.burst
    connect_by_install: bool = False


@dataclass(frozen=True)
class Portal:
    """A registered portal; ``client_secret`` is decrypted."""

    id: int
    name: str
    url: str
    domain: str
    client_id: str
    client_secret: str = field(repr=False)
    oauth_url: str
    scope: str
    token_method: TokenMethod
    member_id: str | None
    client_endpoint: str | None
    granted_scope: str | None
    state: PortalState
    state_reason: str | None
    created_at: float
    updated_at: float
    kind: PortalKind = "oauth"
    # Decrypted: the incoming webhook's URL, its secret in the path (webhook portals only).
    webhook_url: str | None = field(default=None, repr=False)
    # Decrypted: the app's token from its install event, to check later events against.
    application_token: str | None = field(default=None, repr=False)
    # The request budget: Bitrix24 drains `rate` requests/s from a bucket of `burst`.
    rate: float = _DEFAULT_BUDGET.rate
    burst: int = _DEFAULT_BUDGET.burst
    # The app's install event may connect the portal while it has no member_id yet.
    connect_by_install: bool = False
    # With offline event subscriptions: the channel the gateway's own writes carry.
    auth_connector: str | None = None


@dataclass(frozen=True)
class Grant:
    """A portal's OAuth tokens; ``version`` counts the saves (0: never saved)."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_expires_at: float
    refresh_obtained_at: float
    user_id: int | None = None
    server_endpoint: str | None = None
    version: int = 0


@dataclass(frozen=True)
class TokenTimes:
    """A portal's state and its grant's times, without a secret: what monitoring reads."""

    name: str
    kind: PortalKind
    state: PortalState
    access_expires_at: float | None  # None: the portal has no grant
    refresh_obtained_at: float | None


@dataclass(frozen=True)
class Client:
    """A client API key's record; empty ``methods`` or ``ips`` allow any, empty ``events``
    none."""

    id: int
    name: str
    key_id: str
    key_hash: str = field(repr=False)
    methods: tuple[str, ...]
    ips: tuple[str, ...]
    allow_url_key: bool
    portals: tuple[str, ...]
    created_at: float
    revoked_at: float | None
    events: tuple[str, ...] = ()


class PortalChanges(TypedDict, total=False):
    """The fields of a portal that :meth:`Store.update_portal` may change."""

    url: str
    domain: str
    client_id: str
    client_secret: str
    oauth_url: str
    scope: str
    token_method: str
    member_id: str | None
    client_endpoint: str | None
    granted_scope: str | None
    state: PortalState
    state_reason: str | None
    kind: PortalKind
    webhook_url: str | None
    application_token: str | None
    rate: float
    burst: int
    connect_by_install: bool
    auth_connector: str | None


_CHANGEABLE: Final = frozenset(PortalChanges.__annotations__)
_NULLABLE: Final = frozenset(
    {
        "member_id",
        "client_endpoint",
        "granted_scope",
        "state_reason",
        "webhook_url",
        "application_token",
        "auth_connector",
    }
)
# Portal columns sealed with the portal's name and the column's name as associated data.
_SEALED: Final = ("client_secret", "webhook_url", "application_token")


class Store:
    """The gateway's persistent state on SQLite or PostgreSQL. Build it with :meth:`open`."""

    def __init__(self, engine: AsyncEngine, cipher: Cipher) -> None:
        self._engine = engine
        self._cipher = cipher
        self._dialect: Dialect = dialect_of(engine)
        self.changes = ChangeWatch(engine)
        # Rows no cache holds, written quietly: Idempotency-Key answers and durable jobs.
        self.idempotency = IdempotencyStore(engine, cipher, self._dialect)
        self.jobs = JobStore(engine, cipher, self._dialect)
        self.events = EventStore(engine, cipher, self._dialect)
        self.activity = ActivityStore(engine, self._dialect)

    @classmethod
    async def open(cls, url: str, cipher: Cipher) -> Store:
        """Connect, migrate to the newest schema, and check that ``cipher`` is this store's key.

        Raises :class:`ConfigError` when the database is unreachable or the key is foreign.
        """
        engine = make_engine(url)
        try:
            await patiently(lambda: upgrade(engine))
            store = cls(engine, cipher)
            await patiently(store._check_key)
            await store.changes.start()
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            raise ConfigError(f"cannot open the store at {safe_url(url)}: {_reason(exc)}") from exc
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def close(self) -> None:
        await self.changes.close()
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    def derive_key(self, purpose: bytes) -> bytes:
        """A key for ``purpose`` derived from the master key (:meth:`Cipher.derive`)."""
        return self._cipher.derive(purpose)

    async def rotate_key(self, new: Cipher, *, chunk_rows: int = CHUNK_ROWS) -> Rotation:
        """Seal every secret of the store again with ``new``'s current key, in one
        transaction (all or nothing). This store keeps the old key: close it afterwards and
        open the store with the new one."""
        return await reseal(self._engine, self._dialect, self._cipher, new, chunk_rows=chunk_rows)

    async def announce_serving(self, holder: str, ttl: float) -> None:
        """Record that the gateway process ``holder`` serves from this store for ``ttl``
        seconds (renewed while it runs), so that a key rotation can refuse to run under it."""
        await announce_serving(self._engine, holder, ttl)

    async def withdraw_serving(self, holder: str) -> None:
        await withdraw_serving(self._engine, holder)

    async def serving(self) -> list[str]:
        """The gateway processes serving from this store (host:pid:tag), as last announced."""
        return await serving(self._engine)

    async def sign_out(self, session: str, until: float) -> None:
        """Remember that the admin page's session ``session`` (a digest, not the cookie)
        signed out, until ``until``, when it would have expired anyway."""
        await sign_out(self._engine, session, until)

    async def signed_out(self, session: str) -> bool:
        return await signed_out(self._engine, session)

    async def ping(self) -> None:
        """Ask the database a trivial question; raises (the driver's error) when it cannot
        answer, as ``/readyz`` needs."""
        async with self._engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    # -- portals -----------------------------------------------------------------------

    async def add_portal(self, new: NewPortal) -> Portal:
        _check_choice("token_method", new.token_method, _TOKEN_METHODS)
        _check_choice("kind", new.kind, _KINDS)
        if new.kind == "webhook" and not new.webhook_url:
            raise ValueError("a webhook portal needs its webhook URL")
        if new.kind == "oauth" and new.webhook_url is not None:
            raise ValueError("an OAuth portal has no webhook URL")
        now = time.time()
        values: dict[str, Any] = {
            "name": new.name,
            "url": new.url,
            "domain": new.domain.lower(),
            "client_id": new.client_id,
            "oauth_url": new.oauth_url,
            "scope": new.scope,
            "token_method": new.token_method,
            "kind": new.kind,
            "rate": new.rate,
            "burst": new.burst,
            "connect_by_install": new.connect_by_install,
        }
        check_rate(new.rate)
        check_burst(new.burst)
        _check_addresses(
            {"url": new.url, "oauth_url": new.oauth_url, "webhook_url": new.webhook_url}
        )
        if new.kind == "webhook":
            # Nothing to authorize: the webhook works as soon as Bitrix24 created it.
            values["state"] = "connected"
        if not new.name:
            raise ValueError("a portal needs a name")
        _check_lengths(portals, values)
        values["client_secret"] = self._seal_secret(new.name, new.client_secret)
        values["webhook_url"] = self._seal_portal_field(new.name, "webhook_url", new.webhook_url)
        try:
            async with write_transaction(self._engine) as conn:
                taken = (
                    await conn.execute(
                        sa.select(portals.c.name, portals.c.domain).where(
                            (portals.c.name == new.name) | (portals.c.domain == values["domain"])
                        )
                    )
                ).first()
                if taken is not None:
                    if taken.name == new.name:
                        raise StoreConflict(f"a portal named {new.name!r} already exists")
                    raise StoreConflict(
                        f"portal {taken.name!r} already has the domain {values['domain']!r}"
                    )
                row = (
                    await conn.execute(
                        portals.insert()
                        .values(**values, created_at=now, updated_at=now)
                        .returning(*portals.c)
                    )
                ).one()
        except IntegrityError:
            raise StoreConflict(
                f"the portal name {new.name!r} or domain {values['domain']!r} is taken"
            ) from None
        return self._portal(row)

    async def portal(self, name: str) -> Portal | None:
        return await self._one_portal(portals.c.name == name)

    async def portal_by_id(self, portal_id: int) -> Portal | None:
        return await self._one_portal(portals.c.id == portal_id)

    async def portal_by_domain(self, domain: str) -> Portal | None:
        return await self._one_portal(portals.c.domain == domain.lower())

    async def portals(self) -> list[Portal]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(portals).order_by(portals.c.name))).all()
        return [self._portal(row) for row in rows]

    async def token_times(self) -> list[TokenTimes]:
        """Every portal's state and grant times in one query, by name; nothing is decrypted,
        so a scrape every few seconds stays cheap."""
        query = (
            sa.select(
                portals.c.name,
                portals.c.kind,
                portals.c.state,
                grants.c.access_expires_at,
                grants.c.refresh_obtained_at,
            )
            .outerjoin(grants, grants.c.portal_id == portals.c.id)
            .order_by(portals.c.name)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [TokenTimes(*row) for row in rows]

    async def update_portal(self, name: str, /, **changes: Unpack[PortalChanges]) -> Portal:
        """Change some of a portal's fields; raises :class:`UnknownPortal` for no such portal."""
        unknown = set(changes) - _CHANGEABLE
        if unknown:
            raise TypeError(f"update_portal() cannot change {', '.join(sorted(unknown))}")
        values: dict[str, Any] = dict(changes)
        for key, value in values.items():
            if value is None and key not in _NULLABLE:
                raise ValueError(f"a portal's {key} cannot be empty")
        if "state" in values:
            _check_choice("state", values["state"], _STATES)
        if "token_method" in values:
            _check_choice("token_method", values["token_method"], _TOKEN_METHODS)
        if "kind" in values:
            _check_choice("kind", values["kind"], _KINDS)
        if "rate" in values:
            check_rate(values["rate"])
        if "burst" in values:
            check_burst(values["burst"])
        _check_addresses(values)
        if "domain" in values:
            values["domain"] = values["domain"].lower()
        _check_lengths(portals, values)
        for column in _SEALED:
            if column in values:
                values[column] = self._seal_portal_field(name, column, values[column])
        values["updated_at"] = time.time()
        try:
            async with write_transaction(self._engine) as conn:
                row = (
                    await conn.execute(
                        portals.update()
                        .where(portals.c.name == name)
                        .values(**values)
                        .returning(*portals.c)
                    )
                ).first()
                if row is not None and row.kind == "webhook" and row.webhook_url is None:
                    # Raised inside the transaction: the change is rolled back.
                    raise ValueError("a webhook portal needs its webhook URL")
        except IntegrityError:
            raise StoreConflict(
                f"another portal already has the domain {values.get('domain')!r}"
            ) from None
        if row is None:
            raise _unknown_portal(name)
        return self._portal(row)

    async def mark_portal(
        self,
        name: str,
        state: PortalState,
        reason: str | None,
        *,
        forget_application_token: bool = False,
    ) -> None:
        """Set a portal's state; ``not_connected`` also deletes its grant, in one transaction.

        ``forget_application_token`` erases the install event's token too (the app was
        uninstalled: no later event of that installation may be trusted).
        """
        _check_choice("state", state, _STATES)
        values: dict[str, Any] = {"state": state, "state_reason": reason, "updated_at": time.time()}
        if forget_application_token:
            values["application_token"] = None
        async with write_transaction(self._engine) as conn:
            portal_id = await conn.scalar(
                portals.update()
                .where(portals.c.name == name)
                .values(**values)
                .returning(portals.c.id)
            )
            if portal_id is None:
                raise _unknown_portal(name)
            if state == "not_connected":
                await conn.execute(grants.delete().where(grants.c.portal_id == portal_id))

    # -- grants ------------------------------------------------------------------------

    async def grant(self, portal: int | Portal) -> Grant | None:
        portal_id = portal.id if isinstance(portal, Portal) else portal
        query = (
            sa.select(grants, portals.c.name)
            .join(portals, portals.c.id == grants.c.portal_id)
            .where(grants.c.portal_id == portal_id)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return Grant(
            access_token=self._open_token(row.name, "access_token", row.access_token),
            refresh_token=self._open_token(row.name, "refresh_token", row.refresh_token),
            access_expires_at=row.access_expires_at,
            refresh_obtained_at=row.refresh_obtained_at,
            user_id=row.user_id,
            server_endpoint=row.server_endpoint,
            version=row.version,
        )

    async def save_grant(
        self,
        portal: Portal,
        grant: Grant,
        *,
        member_id: str | None = None,
        client_endpoint: str | None = None,
        granted_scope: str | None = None,
        application_token: str | None = None,
        forget_application_token: bool = False,
    ) -> Grant:
        """Store new tokens and mark the portal connected, in one transaction.

        The given portal fields are set when not None (``application_token`` sealed).
        ``forget_application_token`` erases the install event's token instead (an
        administrator authorized the portal: no earlier install's token may be trusted).
        Returns the grant with its new version.
        """
        portal_values: dict[str, Any] = {
            "state": "connected",
            "state_reason": None,
            "updated_at": time.time(),
        }
        for key, value in (
            ("member_id", member_id),
            ("client_endpoint", client_endpoint),
            ("granted_scope", granted_scope),
        ):
            if value is not None:
                portal_values[key] = value
        _check_lengths(portals, portal_values)
        _check_lengths(grants, {"server_endpoint": grant.server_endpoint})
        async with write_transaction(self._engine) as conn:
            name = await conn.scalar(
                portals.update()
                .where(portals.c.id == portal.id)
                .values(**portal_values)
                .returning(portals.c.name)
            )
            if name is None:
                raise _unknown_portal(portal.name)
            if application_token is not None or forget_application_token:
                await conn.execute(
                    portals.update()
                    .where(portals.c.id == portal.id)
                    .values(
                        application_token=None
                        if forget_application_token
                        else self._seal_portal_field(name, "application_token", application_token)
                    )
                )
            tokens = {
                "access_token": self._seal_token(name, "access_token", grant.access_token),
                "refresh_token": self._seal_token(name, "refresh_token", grant.refresh_token),
                "access_expires_at": grant.access_expires_at,
                "refresh_obtained_at": grant.refresh_obtained_at,
                "user_id": grant.user_id,
                "server_endpoint": grant.server_endpoint,
            }
            insert = self._insert(grants).values(portal_id=portal.id, version=1, **tokens)
            upsert = insert.on_conflict_do_update(
                index_elements=[grants.c.portal_id],
                set_={**tokens, "version": grants.c.version + 1},
            ).returning(grants.c.version)
            version = int(await conn.scalar(upsert) or 0)
        return dataclasses.replace(grant, version=version)

    # -- clients -----------------------------------------------------------------------

    async def add_client(
        self,
        name: str,
        key_id: str,
        key_hash: str,
        portals: Sequence[str],
        methods: Sequence[str] = (),
        ips: Sequence[str] = (),
        allow_url_key: bool = False,
        events: Sequence[str] = (),
    ) -> Client:
        """Register a client key (its hash only). Raises :class:`StoreConflict` on a taken
        name or key id, or a portal that does not exist."""
        if not name:
            raise ValueError("a client needs a name")
        wanted = sorted(set(portals))
        if not wanted:
            raise ValueError("a client needs at least one portal")
        values: dict[str, Any] = {
            "name": name,
            "key_id": key_id,
            "key_hash": key_hash,
            "methods": _join("methods", methods),
            "ips": _join("ips", ips),
            "allow_url_key": allow_url_key,
            "created_at": time.time(),
            "events": _join("events", events),
        }
        _check_lengths(clients, values)
        try:
            async with write_transaction(self._engine) as conn:
                if await conn.scalar(sa.select(clients.c.id).where(clients.c.name == name)):
                    raise StoreConflict(f"a client named {name!r} already exists")
                ids = await self._portal_ids(conn, wanted)
                client_id = await conn.scalar(
                    clients.insert().values(**values).returning(clients.c.id)
                )
                await conn.execute(
                    client_portals.insert(),
                    [{"client_id": client_id, "portal_id": ids[p]} for p in wanted],
                )
        except IntegrityError:
            raise StoreConflict(
                f"the client name {name!r} or its key id is taken (generate a new key)"
            ) from None
        return Client(
            id=int(client_id),
            name=name,
            key_id=key_id,
            key_hash=key_hash,
            methods=_split(values["methods"]),
            ips=_split(values["ips"]),
            allow_url_key=allow_url_key,
            portals=tuple(wanted),
            created_at=values["created_at"],
            revoked_at=None,
            events=_split(values["events"]),
        )

    async def client_by_key_id(self, key_id: str) -> Client | None:
        """The client with this key id, unless it was revoked."""
        found = await self._clients((clients.c.key_id == key_id) & clients.c.revoked_at.is_(None))
        return found[0] if found else None

    async def client_by_name(self, name: str) -> Client | None:
        """The client named ``name``, unless it was revoked."""
        found = await self._clients((clients.c.name == name) & clients.c.revoked_at.is_(None))
        return found[0] if found else None

    async def client_by_id(self, client_id: int) -> Client | None:
        """The client with this id, unless it was revoked (a job runs as its client)."""
        found = await self._clients((clients.c.id == client_id) & clients.c.revoked_at.is_(None))
        return found[0] if found else None

    async def clients(self) -> list[Client]:
        """Every client, the revoked ones included, by name."""
        return await self._clients(sa.true())

    async def revoke_client(self, name: str) -> bool:
        """Revoke a client's key; False when no active client has that name."""
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(
                clients.update()
                .where(clients.c.name == name, clients.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        return result.rowcount == 1

    async def set_client_methods(self, name: str, methods: Sequence[str]) -> bool:
        """Change an active client's method patterns; False when there is none of that name."""
        values = {"methods": _join("methods", methods)}
        _check_lengths(clients, values)
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(
                clients.update()
                .where(clients.c.name == name, clients.c.revoked_at.is_(None))
                .values(**values)
            )
        return result.rowcount == 1

    # -- one-time tickets and OAuth states ---------------------------------------------

    async def add_ticket(
        self, token_hash: str, portal_id: int, expires_at: float, force: bool = False
    ) -> None:
        """Store an authorization ticket (by the hash of its token)."""
        await self._add_one_time(tickets, token_hash, portal_id, expires_at, force)

    async def use_ticket(self, token_hash: str, now: float) -> tuple[int, bool] | None:
        """Spend a ticket: ``(portal_id, force)`` for exactly one caller, else None."""
        return await self._use_one_time(tickets, token_hash, now)

    async def add_state(
        self, token_hash: str, portal_id: int, expires_at: float, force: bool = False
    ) -> None:
        """Store an OAuth ``state`` (by its hash)."""
        await self._add_one_time(oauth_states, token_hash, portal_id, expires_at, force)

    async def use_state(self, token_hash: str, now: float) -> tuple[int, bool] | None:
        """Spend an OAuth ``state``: ``(portal_id, force)`` for exactly one caller, else None."""
        return await self._use_one_time(oauth_states, token_hash, now)

    # -- locks -------------------------------------------------------------------------

    def refresh_lock(
        self, portal_id: int, *, wait: float, lease: float
    ) -> AbstractAsyncContextManager[None]:
        """Hold a portal's refresh lock, one holder across all processes; raises
        :class:`LockTimeout` after ``wait`` seconds. ``lease`` bounds how long a holder that
        died blocks others (SQLite; PostgreSQL frees the lock with the session)."""
        return refresh_lock(self._engine, portal_id, wait=wait, lease=lease)

    # -- internals ---------------------------------------------------------------------

    def _insert(self, table: sa.Table) -> Any:
        # The two dialects' INSERTs share the ON CONFLICT API but no common type.
        return pg_insert(table) if self._dialect == "postgresql" else sqlite_insert(table)

    async def _check_key(self) -> None:
        query = sa.select(meta.c.value).where(meta.c.key == "key_check")
        # Read under a lock a key rotation holds until it commits (PostgreSQL: SHARE against
        # its EXCLUSIVE; SQLite: the write lock), so that a process starting during one
        # reads the check it leaves, and fails with the old key, instead of passing on the
        # check being replaced and then writing with a key the store no longer uses.
        async with write_transaction(self._engine, notify=False) as conn:
            if self._dialect == "postgresql":
                name = conn.dialect.identifier_preparer.quote(meta.name)
                await conn.execute(sa.text(f"LOCK TABLE {name} IN SHARE MODE"))
            sealed = await conn.scalar(query)
        if sealed is None:
            # The first open of a new store leaves a verifier, so a later open with another
            # key fails at start instead of at the first token read.
            verifier = self._cipher.encrypt(
                _KEY_CHECK, table="meta", row="key_check", column="value"
            )
            async with write_transaction(self._engine) as conn:
                await conn.execute(
                    self._insert(meta)
                    .values(key="key_check", value=verifier)
                    .on_conflict_do_nothing(index_elements=[meta.c.key])
                )
                sealed = await conn.scalar(query)
        if sealed is None:
            raise ConfigError("the store's key check could not be written")
        opened = self._cipher.decrypt(sealed, table="meta", row="key_check", column="value")
        if opened != _KEY_CHECK:
            raise ConfigError(KEY_MISMATCH)

    def _seal_secret(self, portal_name: str, secret: str) -> bytes:
        return self._cipher.encrypt(
            secret, table="portals", row=portal_name, column="client_secret"
        )

    def _seal_portal_field(self, portal_name: str, column: str, value: str | None) -> bytes | None:
        if value is None:
            return None
        return self._cipher.encrypt(value, table="portals", row=portal_name, column=column)

    def _seal_token(self, portal_name: str, column: str, token: str) -> bytes:
        return self._cipher.encrypt(token, table="grants", row=portal_name, column=column)

    def _open_token(self, portal_name: str, column: str, sealed: bytes) -> str:
        return self._cipher.decrypt(sealed, table="grants", row=portal_name, column=column)

    def _portal(self, row: sa.Row[Any]) -> Portal:
        values = dict(row._mapping)
        for column in _SEALED:
            if values[column] is not None:
                values[column] = self._cipher.decrypt(
                    values[column], table="portals", row=row.name, column=column
                )
        return Portal(**values)

    async def _one_portal(self, where: sa.ColumnElement[bool]) -> Portal | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(portals).where(where))).first()
        return None if row is None else self._portal(row)

    async def _portal_ids(self, conn: AsyncConnection, names: Iterable[str]) -> dict[str, int]:
        wanted = list(names)
        rows = await conn.execute(
            sa.select(portals.c.name, portals.c.id).where(portals.c.name.in_(wanted))
        )
        ids = {str(name): int(portal_id) for name, portal_id in rows}
        missing = [name for name in wanted if name not in ids]
        if missing:
            raise StoreConflict(f"no portal named {', '.join(map(repr, missing))}")
        return ids

    async def _clients(self, where: sa.ColumnElement[bool]) -> list[Client]:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(sa.select(clients).where(where).order_by(clients.c.name))
            ).all()
            if not rows:
                return []
            links = await conn.execute(
                sa.select(client_portals.c.client_id, portals.c.name)
                .join(portals, portals.c.id == client_portals.c.portal_id)
                .where(client_portals.c.client_id.in_([row.id for row in rows]))
                .order_by(portals.c.name)
            )
            names: dict[int, list[str]] = {}
            for client_id, portal_name in links:
                names.setdefault(client_id, []).append(portal_name)
        return [
            Client(
                id=row.id,
                name=row.name,
                key_id=row.key_id,
                key_hash=row.key_hash,
                methods=_split(row.methods),
                ips=_split(row.ips),
                allow_url_key=bool(row.allow_url_key),
                portals=tuple(names.get(row.id, ())),
                created_at=row.created_at,
                revoked_at=row.revoked_at,
                events=_split(row.events),
            )
            for row in rows
        ]

    async def _add_one_time(
        self, table: sa.Table, token_hash: str, portal_id: int, expires_at: float, force: bool
    ) -> None:
        _check_lengths(table, {"token_hash": token_hash})
        try:
            async with write_transaction(self._engine) as conn:
                if (
                    await conn.scalar(sa.select(portals.c.id).where(portals.c.id == portal_id))
                    is None
                ):
                    raise StoreConflict(f"no portal with id {portal_id}")
                await conn.execute(
                    table.insert().values(
                        token_hash=token_hash,
                        portal_id=portal_id,
                        expires_at=expires_at,
                        force=force,
                    )
                )
        except IntegrityError:
            raise StoreConflict(f"this {table.name} token is already stored") from None

    async def _use_one_time(
        self, table: sa.Table, token_hash: str, now: float
    ) -> tuple[int, bool] | None:
        # One UPDATE that only an unused, unexpired row matches: of racing callers, exactly
        # one changes the row and gets it back.
        spend = (
            table.update()
            .where(
                table.c.token_hash == token_hash,
                table.c.used_at.is_(None),
                table.c.expires_at > now,
            )
            .values(used_at=now)
            .returning(table.c.portal_id, table.c.force)
        )
        async with write_transaction(self._engine) as conn:
            row = (await conn.execute(spend)).first()
        return None if row is None else (int(row.portal_id), bool(row.force))


async def store_key_id(url: str) -> str | None:
    """The id of the key that the store at ``url`` is sealed with (its key check's), read
    without any key; None for a store never opened."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            if not await conn.run_sync(lambda c: sa.inspect(c).has_table(meta.name)):
                return None
            blob = await conn.scalar(sa.select(meta.c.value).where(meta.c.key == "key_check"))
    except (SQLAlchemyError, OSError) as exc:
        raise ConfigError(f"cannot open the store at {safe_url(url)}: {_reason(exc)}") from exc
    finally:
        await engine.dispose()
    return None if blob is None else blob_key_id(blob)


def _unknown_portal(name: str) -> UnknownPortal:
    return UnknownPortal(f"no portal named {name!r}")


def _check_choice(what: str, value: str, allowed: frozenset[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(sorted(allowed))}, not {value!r}")


def _check_lengths(table: sa.Table, values: Mapping[str, object]) -> None:
    # PostgreSQL would refuse an over-long string and SQLite would keep it: refuse it here,
    # the same way on both.
    for key, value in values.items():
        column_type = table.c[key].type
        if (
            isinstance(value, str)
            and isinstance(column_type, sa.String)
            and column_type.length is not None
            and len(value) > column_type.length
        ):
            raise ValueError(f"{key} is longer than {column_type.length} characters")


def _join(what: str, items: Sequence[str]) -> str:
    cleaned = [item.strip() for item in items]
    for item in cleaned:
        if not item or "," in item:
            raise ValueError(f"{what} must be non-empty patterns without commas, got {item!r}")
    return ",".join(cleaned)


def _split(joined: str) -> tuple[str, ...]:
    return tuple(joined.split(",")) if joined else ()


def _reason(exc: BaseException) -> str:
    # A DBAPIError's own text carries the statement; the driver's message is what helps.
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


def _check_addresses(values: Mapping[str, Any]) -> None:
    """Whoever registers a portal, its tokens and its webhook's secret never go to plain
    http off loopback, nor to an address with a path or a user name (docs/security.md):
    the administration's own rules (:mod:`b24gate.bitrix`), checked again here."""
    if values.get("url") is not None:
        portal_address(values["url"])
    # A webhook portal has no OAuth server: its oauth_url is empty.
    if values.get("oauth_url"):
        oauth_address(values["oauth_url"])
    if values.get("webhook_url") is not None:
        webhook_address(values["webhook_url"])
