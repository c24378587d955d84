"""Small HTML templates for the admin page, without a template engine: every value put into
markup is escaped unless it is already :class:`Markup` (markup this module or the page
built). A client named ``<script>`` shows as that text.

    row = render("<tr data-client='{name}'><td>{name}</td></tr>", name=client.name)
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime


class Markup(str):
    """Text that is already HTML: put into a template as it is."""

    __slots__ = ()


def esc(value: object) -> Markup:
    """``value`` as HTML text: escaped (quotes too, for attributes); None as nothing."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("")
    return Markup(html.escape(str(value), quote=True))


def render(template: str, /, **values: object) -> Markup:
    """``template`` (``str.format`` fields, written in this package) with each value
    escaped. Attributes in templates are quoted, so an escaped value cannot leave them."""
    return Markup(template.format(**{name: esc(value) for name, value in values.items()}))


def join(parts: Iterable[object], sep: str = "") -> Markup:
    """The parts, each escaped unless it is markup, one after another."""
    return Markup(sep.join(esc(part) for part in parts))


def moment(at: float | None) -> Markup:
    """A point in time, in UTC; the page's script shows it in the reader's own zone."""
    if at is None:
        return Markup("—")
    when = datetime.fromtimestamp(at, UTC)
    return render(
        "<time datetime='{iso}'>{text}</time>",
        iso=when.isoformat(timespec="seconds"),
        text=when.strftime("%Y-%m-%d %H:%M:%S UTC"),
    )


def span(seconds: float, units: Mapping[str, str]) -> str:
    """A duration as a person reads it: 45 s, 12 min, 5 h, 3 d (``units``: the page's
    ``unit.*`` strings)."""
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} {units['unit.s']}"
    if seconds < 7200:
        return f"{seconds / 60:.0f} {units['unit.min']}"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.0f} {units['unit.h']}"
    return f"{seconds / 86400:.0f} {units['unit.d']}"


def hidden(name: str, value: object) -> Markup:
    return render("<input type='hidden' name='{name}' value='{value}'>", name=name, value=value)
