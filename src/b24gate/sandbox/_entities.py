"""One generic engine behind every emulated entity (deals, contacts, companies, products).

An entity is a :class:`EntitySpec`: its method prefix, scope, fields and naming style.
Adding an entity is a spec of a few lines in :data:`ENTITIES`; the CRUD + list methods,
filters, ordering and paging come from :class:`EntityTable`.
"""

from __future__ import annotations

import bisect
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from ._config import PAGE_SIZE

Style = Literal["crm", "catalog"]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str = "string"
    required: bool = False
    read_only: bool = False
    multiple: bool = False


@dataclass(frozen=True)
class EntitySpec:
    prefix: str  # e.g. "crm.deal"
    scope: str
    style: Style
    fields: tuple[FieldSpec, ...]
    title: str = ""
    seed: Callable[[int], dict[str, Any]] | None = None

    @property
    def id_field(self) -> str:
        return "ID" if self.style == "crm" else "id"

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> FieldSpec | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


# Types of the fields a list filter compares as numbers, as crm.*.fields names them; every
# other field is a string in Bitrix24's list SQL and is compared as text.
_CRM_TYPES = {
    "OPPORTUNITY": "double",
    "REVENUE": "double",
    "CATEGORY_ID": "crm_category",
    "COMPANY_ID": "crm_company",
    "CONTACT_ID": "crm_contact",
}


def _crm(*names: str, multiple: tuple[str, ...] = ()) -> tuple[FieldSpec, ...]:
    base = [
        FieldSpec("ID", "integer", read_only=True),
        *(FieldSpec(n, _CRM_TYPES.get(n, "string")) for n in names),
        *(FieldSpec(n, "crm_multifield", multiple=True) for n in multiple),
        FieldSpec("ASSIGNED_BY_ID", "user"),
        FieldSpec("CREATED_BY_ID", "user", read_only=True),
        FieldSpec("DATE_CREATE", "datetime", read_only=True),
        FieldSpec("DATE_MODIFY", "datetime", read_only=True),
        FieldSpec("COMMENTS"),
        # The external system and the record's id in it (main-entities-fields.md): plain
        # strings, not unique; a record sent twice is two records.
        FieldSpec("ORIGINATOR_ID"),
        FieldSpec("ORIGIN_ID"),
    ]
    return tuple(base)


def _seed_deal(i: int) -> dict[str, Any]:
    return {
        "TITLE": f"Deal {i}",
        "STAGE_ID": ("NEW", "PREPARATION", "WON")[i % 3],
        "OPPORTUNITY": f"{(i % 1000) * 10}.00",
        "CURRENCY_ID": "RUB",
    }


def _seed_product(i: int) -> dict[str, Any]:
    # The default seed would put the title into the second field, which here is iblockId.
    return {"iblockId": 1, "name": f"Product {i}"}


ENTITIES: tuple[EntitySpec, ...] = (
    EntitySpec(
        "crm.deal",
        "crm",
        "crm",
        _crm(
            "TITLE",
            "TYPE_ID",
            "STAGE_ID",
            "CATEGORY_ID",
            "CURRENCY_ID",
            "OPPORTUNITY",
            "COMPANY_ID",
            "CONTACT_ID",
            "BEGINDATE",
            "CLOSEDATE",
            "OPENED",
            "CLOSED",
            "SOURCE_ID",
        ),
        title="Deal",
        seed=_seed_deal,
    ),
    EntitySpec(
        "crm.contact",
        "crm",
        "crm",
        _crm(
            "NAME",
            "LAST_NAME",
            "SECOND_NAME",
            "POST",
            "COMPANY_ID",
            "TYPE_ID",
            "SOURCE_ID",
            "OPENED",
            "BIRTHDATE",
            "ORIGIN_VERSION",
            multiple=("PHONE", "EMAIL"),
        ),
        title="Contact",
    ),
    EntitySpec(
        "crm.company",
        "crm",
        "crm",
        _crm(
            "TITLE",
            "COMPANY_TYPE",
            "INDUSTRY",
            "REVENUE",
            "CURRENCY_ID",
            "OPENED",
            "ADDRESS",
            "ORIGIN_VERSION",
            multiple=("PHONE", "EMAIL"),
        ),
        title="Company",
    ),
    EntitySpec(
        "catalog.product",
        "catalog",
        "catalog",
        (
            FieldSpec("id", "integer", read_only=True),
            FieldSpec("iblockId", "integer", required=True),
            FieldSpec("name", required=True),
            FieldSpec("active", "char"),
            FieldSpec("code"),
            FieldSpec("xmlId"),
            FieldSpec("iblockSectionId", "integer"),
            FieldSpec("sort", "integer"),
            FieldSpec("purchasingPrice", "double"),
            FieldSpec("purchasingCurrency"),
            FieldSpec("quantity", "double"),
            FieldSpec("measure", "integer"),
            FieldSpec("vatId", "integer"),
            FieldSpec("vatIncluded", "char"),
            FieldSpec("detailText"),
            FieldSpec("createdBy", "integer", read_only=True),
            FieldSpec("dateCreate", "datetime", read_only=True),
            FieldSpec("timestampX", "datetime", read_only=True),
        ),
        title="Product",
        seed=_seed_product,
    ),
)

# Filter key prefixes, longest first so that ">=" wins over ">". "=%" and "%=" are SQL
# LIKE with the caller's own wildcards (crm-deal-list.md), "!" before them negates.
_OPERATORS = ("!=%", "!%=", "!=", ">=", "<=", "!%", "!@", "=%", "%=", "=", "!", ">", "<", "%", "@")
_PATTERN_OPS = ("=%", "%=", "!=%", "!%=")


def _like(pattern: str, value: str) -> bool:
    """SQL ``LIKE`` (``%`` any run, ``_`` one character), case-insensitive as the "%"
    filter already is here."""
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL) is not None


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _compare(a: Any, b: Any) -> int:
    na, nb = _as_number(a), _as_number(b)
    if na is not None and nb is not None:
        return (na > nb) - (na < nb)
    sa, sb = "" if a is None else str(a), "" if b is None else str(b)
    return (sa > sb) - (sa < sb)


def _as_text(value: Any) -> str:
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any
    # A string field of a CRM entity: SQL compares it as text, so "007" is not "7".
    text: bool = False

    @classmethod
    def parse(cls, key: str, value: Any) -> Condition:
        for op in _OPERATORS:
            if key.startswith(op) and len(key) > len(op):
                return cls(key[len(op) :], op, value)
        return cls(key, "", value)

    def _values(self) -> list[Any]:
        if isinstance(self.value, list):
            return self.value
        if isinstance(self.value, dict):
            return list(self.value.values())
        return [self.value]

    def matches(self, record: Mapping[str, Any]) -> bool:
        actual = record.get(self.field)
        op = self.op
        if self.text and op in ("", "=", "@", "!", "!=", "!@"):
            # An empty value finds the records without one (IS NULL OR = '').
            found = any(_as_text(actual) == _as_text(v) for v in self._values())
            return found if op in ("", "=", "@") else not found
        if op in ("", "=", "@"):
            return any(_compare(actual, v) == 0 for v in self._values())
        if op in ("!", "!=", "!@"):
            return all(_compare(actual, v) != 0 for v in self._values())
        if op in _PATTERN_OPS:
            found = actual is not None and any(
                _like(_as_text(v), str(actual)) for v in self._values()
            )
            return found if op[0] != "!" else not found
        if op in ("%", "!%"):
            needle = str(self.value).lower()
            found = actual is not None and needle in str(actual).lower()
            return found if op == "%" else not found
        c = _compare(actual, self.value)
        return {">": c > 0, ">=": c >= 0, "<": c < 0, "<=": c <= 0}[op]


@dataclass
class Page:
    rows: list[dict[str, Any]]
    total: int
    next: int | None


@dataclass
class EntityTable:
    """Records of one entity, kept in ID order so ID-ranged pages cost no full scan."""

    spec: EntitySpec
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    ids: list[int] = field(default_factory=list)
    next_id: int = 1
    # The portal's clock, so DATE_CREATE/DATE_MODIFY agree with server.time under a test clock.
    now: Callable[[], float] = time.time

    def _stamp(self) -> str:
        return datetime.fromtimestamp(self.now(), UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")

    def _normalise(self, name: str, value: Any) -> Any:
        if self.spec.style == "catalog":
            return value
        # CRM answers every scalar as a string (crm-deal-get.md: "ID":"410").
        spec = self.spec.field(name)
        if spec is not None and spec.multiple:
            items = value if isinstance(value, list) else [value]
            return [
                {"ID": str(n + 1), "VALUE_TYPE": "WORK", "TYPE_ID": name, **item}
                if isinstance(item, dict)
                else {"ID": str(n + 1), "VALUE_TYPE": "WORK", "TYPE_ID": name, "VALUE": item}
                for n, item in enumerate(items)
            ]
        if isinstance(value, bool):
            return "Y" if value else "N"
        if isinstance(value, int | float):
            return str(value)
        return value

    def _accepts(self, name: str) -> bool:
        spec = self.spec.field(name)
        if spec is not None:
            return not spec.read_only
        # Unknown fields are ignored, as Bitrix24 does; user fields are always accepted.
        return name.startswith("UF_") or (
            self.spec.style == "catalog" and name.startswith("property")
        )

    def add(self, fields: Mapping[str, Any], user_id: int) -> dict[str, Any]:
        new_id = self.next_id
        self.next_id += 1
        now = self._stamp()
        record: dict[str, Any] = {}
        if self.spec.style == "crm":
            record.update(
                ID=str(new_id),
                DATE_CREATE=now,
                DATE_MODIFY=now,
                CREATED_BY_ID=str(user_id),
                ASSIGNED_BY_ID=str(user_id),
            )
        else:
            record.update(id=new_id, createdBy=user_id, dateCreate=now, timestampX=now)
        for name, value in fields.items():
            if self._accepts(name):
                record[name] = self._normalise(name, value)
        self.records[new_id] = record
        self.ids.append(new_id)
        return record

    def get(self, record_id: int) -> dict[str, Any] | None:
        return self.records.get(record_id)

    def update(self, record_id: int, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        record = self.records.get(record_id)
        if record is None:
            return None
        for name, value in fields.items():
            if self._accepts(name):
                record[name] = self._normalise(name, value)
        if self.spec.style == "crm":
            record["DATE_MODIFY"] = self._stamp()
        else:
            record["timestampX"] = self._stamp()
        return record

    def delete(self, record_id: int) -> bool:
        if self.records.pop(record_id, None) is None:
            return False
        del self.ids[bisect.bisect_left(self.ids, record_id)]
        return True

    def full(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The record with every field of the entity, empty ones as null."""
        out = {name: record.get(name) for name in self.spec.field_names}
        out.update((k, v) for k, v in record.items() if k not in out)
        return out

    def project(self, record: Mapping[str, Any], select: list[str]) -> dict[str, Any]:
        if not select or "*" in select:
            names = [f.name for f in self.spec.fields if not f.multiple]
            extra = [n for n in select if n != "*" and n not in names]
            if "UF_*" in select or not select:
                extra += [k for k in record if k.startswith("UF_") and k not in extra]
            names += [n for n in extra if n != "UF_*"]
        else:
            names = select
        return {name: record.get(name) for name in names}

    def conditions(self, flt: Mapping[str, Any]) -> list[Condition]:
        """A list's ``filter`` as Bitrix24's CRM list reads it (``CSqlUtil::PrepareWhere``,
        docs/sandbox.md "External ids"): a key naming no field of the entity is skipped,
        not an error, and a string field is compared as text, ``KEY`` and ``=KEY`` alike."""
        if self.spec.style != "crm":
            return [Condition.parse(k, v) for k, v in flt.items()]
        out = []
        for key, value in flt.items():
            c = Condition.parse(key, value)
            spec = self.spec.field(c.field)
            if spec is None and not c.field.startswith("UF_"):
                continue
            text = spec is not None and spec.type == "string"
            out.append(Condition(c.field, c.op, c.value, text=text))
        return out

    def _id_bounds(self, conditions: list[Condition]) -> tuple[int, int]:
        lo, hi = 0, len(self.ids)
        for c in conditions:
            if c.field != self.spec.id_field:
                continue
            n = _as_number(c.value)
            if n is None:
                # Compared as text (_compare): a value such as an unresolved batch reference
                # (`[]`) sorts above every ID, which starts with a digit. No ID is above it.
                above_all = str(c.value)[:1] > "9" and c.value is not None
                if above_all and c.op in (">", ">="):
                    return lo, lo
                continue
            if c.op == ">":
                lo = max(lo, bisect.bisect_right(self.ids, n))
            elif c.op == ">=":
                lo = max(lo, bisect.bisect_left(self.ids, n))
            elif c.op == "<":
                hi = min(hi, bisect.bisect_left(self.ids, n))
            elif c.op == "<=":
                hi = min(hi, bisect.bisect_right(self.ids, n))
            elif c.op in ("", "="):
                lo = max(lo, bisect.bisect_left(self.ids, n))
                hi = min(hi, bisect.bisect_right(self.ids, n))
        return lo, max(lo, hi)

    def _matching(
        self, conditions: list[Condition], order: list[tuple[str, bool]]
    ) -> Iterator[dict[str, Any]]:
        lo, hi = self._id_bounds(conditions)
        by_id = not order or (len(order) == 1 and order[0][0] == self.spec.id_field)
        descending = bool(order) and order[0][1]
        candidates = (
            self.records[i]
            for i in (reversed(self.ids[lo:hi]) if by_id and descending else self.ids[lo:hi])
        )
        matching = (r for r in candidates if all(c.matches(r) for c in conditions))
        if by_id:
            return matching
        rows = list(matching)
        for name, desc in reversed(order):
            rows.sort(key=_sort_key(name), reverse=desc)
        return iter(rows)

    def _by_id_alone(self, conditions: list[Condition], order: list[tuple[str, bool]]) -> bool:
        """Whether the ID bounds decide the page by themselves: every condition a numeric
        comparison on the ID, the order the ID's (so a count costs no scan)."""
        id_field = self.spec.id_field
        return all(
            c.field == id_field
            and c.op in (">", ">=", "<", "<=")
            and _as_number(c.value) is not None
            for c in conditions
        ) and (not order or (len(order) == 1 and order[0][0] == id_field))

    def _id_page(
        self,
        conditions: list[Condition],
        order: list[tuple[str, bool]],
        select: list[str],
        start: int,
    ) -> Page:
        lo, hi = self._id_bounds(conditions)
        offset = max(start, 0)
        if order and order[0][1]:  # descending
            ids = self.ids[max(lo, hi - offset - PAGE_SIZE) : hi - offset][::-1]
        else:
            ids = self.ids[lo + offset : min(hi, lo + offset + PAGE_SIZE)]
        page = [self.project(self.records[i], select) for i in ids]
        if start == -1:
            return Page(page, 0, None)
        total = hi - lo
        return Page(page, total, offset + PAGE_SIZE if total > offset + PAGE_SIZE else None)

    def list(
        self,
        conditions: list[Condition],
        order: list[tuple[str, bool]],
        select: list[str],
        start: int,
    ) -> Page:
        """One page of 50; ``start == -1`` skips the count (no ``next``, ``total`` 0)."""
        if self._by_id_alone(conditions, order):
            return self._id_page(conditions, order, select, start)
        rows = self._matching(conditions, order)
        offset = max(start, 0)
        page: list[dict[str, Any]] = []
        total = 0
        for total, record in enumerate(rows, start=1):
            if offset < total <= offset + PAGE_SIZE:
                page.append(self.project(record, select))
            elif total > offset + PAGE_SIZE and start == -1:
                break
        if start == -1:
            return Page(page, 0, None)
        nxt = offset + PAGE_SIZE if total > offset + PAGE_SIZE else None
        return Page(page, total, nxt)

    def seed(self, count: int) -> None:
        make = self.spec.seed or (lambda i: {self.spec.field_names[1]: f"{self.spec.title} {i}"})
        for _ in range(count):
            self.add(make(self.next_id), user_id=1)


def _sort_key(name: str) -> Callable[[Mapping[str, Any]], tuple[int, float, str]]:
    """Numbers before strings, numbers compared as numbers, as SQL would order them."""

    def key(record: Mapping[str, Any]) -> tuple[int, float, str]:
        value = record.get(name)
        number = _as_number(value)
        if number is not None:
            return (0, number, "")
        return (1, 0.0, "" if value is None else str(value))

    return key
