"""The emulated portal's state and the path of one REST call through it.

Everything here is plain Python over the injectable clock; HTTP lives in :mod:`._server`.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import _errors as errors
from ._batch import run_batch
from ._clock import Clock
from ._config import SandboxConfig
from ._entities import ENTITIES, EntityTable
from ._events import EventHub
from ._faults import FaultQueue
from ._latency import Latency, RequestCutOff, RequestTimer
from ._limits import LeakyBucket, OperatingBudget
from ._methods import REGISTRY, Caller, Outcome
from ._oauth import App, OAuthServer
from ._writes import WriteCounter


@dataclass
class Webhook:
    user_id: int
    code: str = field(repr=False)
    scope: frozenset[str]


@dataclass
class RestCounters:
    rest_calls: int = 0
    executed: int = 0
    rejected_503: int = 0
    in_flight: int = 0
    max_concurrent: int = 0
    secret_in_query: int = 0
    batches: int = 0
    cut_off: int = 0


def _users() -> dict[int, dict[str, Any]]:
    people = [
        (1, "Sandbox", "Admin", True),
        (2, "Ivan", "Petrov", False),
        (3, "Анна", "Смирнова", False),
    ]
    return {
        uid: {
            "ID": str(uid),
            "ACTIVE": True,
            "ADMIN": admin,
            "NAME": name,
            "LAST_NAME": last,
            "EMAIL": f"user{uid}@sandbox.invalid",
            "PERSONAL_GENDER": "",
            "TIME_ZONE": "",
            "WORK_POSITION": "",
            "UF_DEPARTMENT": [1],
        }
        for uid, name, last, admin in people
    }


def _connector(value: Any) -> str:
    return str(value) if isinstance(value, str | int | float) else ""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


class Portal:
    """One Bitrix24 portal together with its (cloud-style) OAuth server."""

    def __init__(self, config: SandboxConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.oauth = OAuthServer(self.clock, config.access_ttl, config.refresh_ttl)
        self.app = self.oauth.register(
            App(config.client_id, config.client_secret, config.scope, config.redirect_uri)
        )
        self.member_id = config.member_id
        self.tables = {spec.prefix: EntityTable(spec, now=self.clock.now) for spec in ENTITIES}
        self.users = _users()
        self.webhooks: dict[tuple[int, str], Webhook] = {}
        self.bucket = LeakyBucket(self.clock, config.rate, config.burst)
        self.budget = OperatingBudget(self.clock, config.operating_limit)
        self.method_costs: dict[str, float] = {m.lower(): c for m, c in config.method_costs}
        self.latency = Latency(config.latency_request, config.latency_command, config.latency_page)
        self.request_time_limit = config.request_time_limit
        self.require_https = config.require_https
        self.auto_approve = config.auto_approve
        self.faults = FaultQueue()
        self.counters = RestCounters()
        # Records created per external id (ORIGIN_ID, ...): the proof that nothing doubled.
        self.writes = WriteCounter()
        # Event bindings, offline queues and deliveries (docs/sandbox.md, "Events").
        self.events = EventHub(self)
        # Every URL (path and query) the portal and OAuth server received, newest last.
        self.received: deque[str] = deque(maxlen=100_000)
        # The portal's current host[:port]; known once the server listens.
        self.domain = ""
        self.old_domains: set[str] = set()
        if config.seed_deals:
            self.tables["crm.deal"].seed(config.seed_deals)

    # -- who is calling ---------------------------------------------------------------

    def caller_for_token(self, token: str) -> Caller:
        grant = self.oauth.access.get(token)
        if grant is None:
            raise errors.invalid_token()
        if grant.expires_at <= self.clock.now():
            raise errors.expired_token()
        return Caller(grant.user_id, frozenset(grant.scope), grant.client_id)

    def caller_for_webhook(self, user_id: str, code: str) -> Caller:
        hook = self.webhooks.get((int(user_id), code)) if user_id.isdigit() else None
        if hook is None:
            raise errors.invalid_credentials()
        return Caller(hook.user_id, hook.scope, None)

    def add_webhook(self, user_id: int, scope: frozenset[str]) -> Webhook:
        hook = Webhook(user_id, secrets.token_hex(8), scope)
        self.webhooks[(user_id, hook.code)] = hook
        self.oauth.issued.append(hook.code)
        return hook

    # -- one request ------------------------------------------------------------------

    async def request(
        self, caller: Caller, method_name: str, params: dict[str, Any]
    ) -> tuple[Outcome, dict[str, Any]]:
        """One REST request: its latency, its method (a batch's commands included) and its
        operating time, all of it billed to the method called: a batch to ``batch``, as
        the b24jssdk maintainers measured (docs/sandbox.md, "Billing").

        Past the request time cap it is answered 500 ``INTERNAL_SERVER_ERROR`` (inferred,
        docs/sandbox.md): what ran before the cap stays done, the rest never ran.
        What it changed fires its events when it ends (a batch's commands all on the
        batch's own ``auth_connector``, as ``CRestServerBatchItem`` inherits it).
        """
        name = method_name.lower()
        if not caller.webhook and "auth_connector" in params:
            # OAuth's auth parameter (Rest\OAuth\Auth): taken out of the method's parameters.
            connector = params.pop("auth_connector")
            caller = dataclasses.replace(caller, auth_connector=_connector(connector))
        timer = RequestTimer(self.clock.now(), self.request_time_limit)
        with self.events.hit(caller):
            try:
                await timer.work(self.latency.request)
                if name == "batch":
                    outcome = await self._batch(caller, params, timer)
                else:
                    outcome = await self.run_method(caller, name, params, timer)
            except RequestCutOff:
                self.counters.cut_off += 1
                self.budget.charge(name, timer.billed)
                raise errors.internal_error() from None
        operating, reset_at = self.budget.charge(name, timer.billed)
        timing = self.time_block(timer.started, timer.elapsed, operating, reset_at)
        # The synthetic cost (--method-cost) is work the portal did, as the charge says.
        timing["processing"] = timer.billed
        return outcome, timing

    async def _batch(self, caller: Caller, params: dict[str, Any], timer: RequestTimer) -> Outcome:
        if self.budget.blocked("batch"):
            raise errors.operation_time_limit()
        timer.synthetic += self.method_costs.get("batch", 0.0)
        outcome = Outcome(await run_batch(self, caller, params, timer))
        self.counters.batches += 1
        return outcome

    async def run_method(
        self, caller: Caller, name: str, params: dict[str, Any], timer: RequestTimer
    ) -> Outcome:
        """One method, alone or as a batch's command: its checks, its latency, its work.

        Inside a batch it is still refused while its own budget is spent by direct calls,
        though what it costs there is billed to ``batch``.
        """
        method = REGISTRY.get(name)
        if method is None:
            raise errors.method_not_found()
        if method.scope is not None and method.scope not in caller.scope:
            raise errors.insufficient_scope(caller.webhook)
        if self.budget.blocked(name):
            raise errors.operation_time_limit()
        await timer.work(self.latency.of_method(name))
        began = time.perf_counter()
        outcome = await method.handler(self, caller, params)
        timer.elapsed += time.perf_counter() - began
        timer.synthetic += self.method_costs.get(name, 0.0)
        return outcome

    def time_block(
        self, start: float, processing: float, operating: float, reset_at: int
    ) -> dict[str, Any]:
        finished = max(self.clock.now(), start + processing)
        return {
            "start": start,
            "finish": finished,
            "duration": finished - start,
            "processing": processing,
            "date_start": _iso(start),
            "date_finish": _iso(finished),
            "operating_reset_at": reset_at,
            "operating": operating,
        }

    def answer(self, outcome: Outcome, timing: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"result": outcome.result}
        if outcome.next is not None:
            body["next"] = outcome.next
        if outcome.total is not None:
            body["total"] = outcome.total
        body["time"] = timing
        return body

    # -- chaos and test helpers -------------------------------------------------------

    def move(self, new_domain: str) -> None:
        if self.domain and self.domain != new_domain:
            self.old_domains.add(self.domain)
        self.old_domains.discard(new_domain)
        self.domain = new_domain

    def client_endpoint(self, scheme: str) -> str:
        return f"{scheme}://{self.domain}/rest/"
