"""Every string of the admin page, in English and Russian: one dictionary per language with
the same keys (checked when the module is imported: a missing translation fails at once).

The language is the ``lang`` cookie that the page's switch sets, else the browser's
``Accept-Language``, else English.
"""

from __future__ import annotations

from typing import Final

LANGUAGES: Final = ("en", "ru")
DEFAULT: Final = "en"

EN: Final[dict[str, str]] = {
    "title": "b24gate administration",
    "nav.portals": "Portals",
    "nav.clients": "Clients",
    "nav.calls": "Refused calls",
    "nav.jobs": "Jobs",
    "nav.events": "Events",
    "sign_out": "Sign out",
    "sign_in.title": "Sign in",
    "sign_in.token": "Admin token",
    "sign_in.button": "Sign in",
    "sign_in.wrong": "That is not the admin token.",
    "sign_in.limited": "Too many failed sign-ins from your address. Try again in a minute.",
    "sign_in.expired": "Your session has ended: sign in again.",
    "off.title": "The admin page is off",
    "off.text": (
        "No admin token is configured. Set B24GATE_ADMIN_TOKEN (or B24GATE_ADMIN_TOKEN_FILE) "
        "to a long random value, e.g. the output of `openssl rand -base64 32`, and restart "
        "the gateway; then sign in here with that token."
    ),
    "not_found": "No such page.",
    "forbidden.title": "Refused",
    "forbidden.text": (
        "The form was not sent from this page (its check or its origin is missing or "
        "wrong). Reload the page and try again."
    ),
    "portals.title": "Portals",
    "portals.none": "No portals are registered: `b24gate portal add`.",
    "col.portal": "Portal",
    "col.kind": "Kind",
    "col.state": "State",
    "col.reason": "Reason",
    "col.access": "Access token expires",
    "col.refresh": "Refresh token age",
    "col.budget": "Request budget",
    "col.queue": "Queue now",
    "col.operating": "Operating time (10 min)",
    "col.action": "",
    "kind.oauth": "OAuth",
    "kind.webhook": "webhook",
    "keepalive.in": "keep-alive in {span}",
    "keepalive.due": "keep-alive due",
    "budget": "{rate}/s, bucket {burst}",
    "budget.none": "no limit",
    "queue": "{waiting} waiting, {sending} on the way",
    "operating.none": "—",
    "connect": "Connect",
    "reauthorize": "Re-authorize",
    "connect.title": "Connecting {name}",
    "connect.text": (
        "Bitrix24 opens next: sign in there as the portal's administrator and allow the "
        "application; you come back to the gateway's page that says the portal is connected."
    ),
    "connect.continue": "Continue to Bitrix24",
    "clients.title": "Clients",
    "clients.new": "New client",
    "clients.none": "No clients yet.",
    "field.name": "Name",
    "field.portals": "Portals (comma-separated)",
    "field.methods": "Methods (comma-separated patterns such as crm.*; empty: every method)",
    "field.ips": "Addresses (comma-separated IPs or CIDRs; empty: any)",
    "field.events": "Events (comma-separated patterns such as ONCRMDEAL*; empty: none)",
    "create": "Create",
    "new_key": "The client's key. It is shown this once and never again: copy it now.",
    "col.client": "Client",
    "col.portals": "Portals",
    "col.methods": "Methods",
    "col.ips": "Addresses",
    "col.events": "Events",
    "col.created": "Created",
    "col.last_use": "Last use",
    "col.hour": "Calls / errors, this hour",
    "col.day": "Calls / errors, 24 h",
    "any_method": "every method",
    "any_address": "any",
    "no_events": "none",
    "save": "Save",
    "revoke": "Revoke",
    "revoked": "revoked {when}",
    "never": "never (in the last 31 days)",
    "revoke.title": "Revoke the client {name}?",
    "revoke.text": "Its key stops working at once, on every replica. This cannot be undone.",
    "confirm": "Revoke the key",
    "cancel": "Cancel",
    "done.revoked": "The client {name} is revoked.",
    "done.methods": "The methods of {name} are saved.",
    "calls.title": "Refused and failed calls",
    "calls.note": (
        "The last 7 days, at most 10,000 calls; no keys, tokens or parameters are kept."
    ),
    "calls.dropped": "This process skipped {n} refusals during a flood (at most 1,000 a second "
    "are kept).",
    "calls.none": "No refused calls.",
    "filter.code": "Code",
    "filter.client": "Client",
    "filter.portal": "Portal",
    "filter.apply": "Filter",
    "col.time": "Time",
    "col.code": "Code",
    "col.status": "Status",
    "col.surface": "Surface",
    "col.method": "Method",
    "col.address": "Address",
    "jobs.title": "Jobs",
    "jobs.none": "No jobs.",
    "col.job": "Job",
    "col.commands": "Commands",
    "col.finished": "Finished",
    "events.title": "Event subscriptions",
    "events.none": "No event subscriptions.",
    "col.event": "Event",
    "col.mode": "Mode",
    "col.since": "Since",
    "events.log": "Event log",
    "col.last_seq": "Last event",
    "col.purged": "Purged up to",
    "unit.s": "s",
    "unit.min": "min",
    "unit.h": "h",
    "unit.d": "d",
}

RU: Final[dict[str, str]] = {
    "title": "Администрирование b24gate",
    "nav.portals": "Порталы",
    "nav.clients": "Клиенты",
    "nav.calls": "Отказы",
    "nav.jobs": "Задания",
    "nav.events": "События",
    "sign_out": "Выйти",
    "sign_in.title": "Вход",
    "sign_in.token": "Токен администратора",
    "sign_in.button": "Войти",
    "sign_in.wrong": "Это не токен администратора.",
    "sign_in.limited": "Слишком много неудачных попыток входа с вашего адреса. Повторите через "
    "минуту.",
    "sign_in.expired": "Сеанс закончился: войдите снова.",
    "off.title": "Страница администрирования выключена",
    "off.text": (
        "Токен администратора не задан. Задайте B24GATE_ADMIN_TOKEN (или "
        "B24GATE_ADMIN_TOKEN_FILE) — длинное случайное значение, например вывод "
        "`openssl rand -base64 32`, — и перезапустите шлюз; затем войдите здесь с этим токеном."
    ),
    "not_found": "Такой страницы нет.",
    "forbidden.title": "Отказано",
    "forbidden.text": (
        "Форма отправлена не с этой страницы (её проверка или источник отсутствует или "
        "неверен). Обновите страницу и повторите."
    ),
    "portals.title": "Порталы",
    "portals.none": "Порталы не зарегистрированы: `b24gate portal add`.",
    "col.portal": "Портал",
    "col.kind": "Тип",
    "col.state": "Состояние",
    "col.reason": "Причина",
    "col.access": "Access-токен истекает",
    "col.refresh": "Возраст refresh-токена",
    "col.budget": "Лимит запросов",
    "col.queue": "Очередь сейчас",
    "col.operating": "Время выполнения (10 мин)",
    "col.action": "",
    "kind.oauth": "OAuth",
    "kind.webhook": "вебхук",
    "keepalive.in": "обновление через {span}",
    "keepalive.due": "пора обновить",
    "budget": "{rate}/с, корзина {burst}",
    "budget.none": "без ограничения",
    "queue": "ждут {waiting}, в пути {sending}",
    "operating.none": "—",
    "connect": "Подключить",
    "reauthorize": "Переподключить",
    "connect.title": "Подключение {name}",
    "connect.text": (
        "Сейчас откроется Битрикс24: войдите как администратор портала и разрешите доступ "
        "приложению; затем откроется страница шлюза о том, что портал подключён."
    ),
    "connect.continue": "Перейти в Битрикс24",
    "clients.title": "Клиенты",
    "clients.new": "Новый клиент",
    "clients.none": "Клиентов пока нет.",
    "field.name": "Имя",
    "field.portals": "Порталы (через запятую)",
    "field.methods": "Методы (шаблоны через запятую, например crm.*; пусто — любые методы)",
    "field.ips": "Адреса (IP или CIDR через запятую; пусто — любые)",
    "field.events": "События (шаблоны через запятую, например ONCRMDEAL*; пусто — никакие)",
    "create": "Создать",
    "new_key": "Ключ клиента. Он показан один раз и больше показан не будет: скопируйте его.",
    "col.client": "Клиент",
    "col.portals": "Порталы",
    "col.methods": "Методы",
    "col.ips": "Адреса",
    "col.events": "События",
    "col.created": "Создан",
    "col.last_use": "Последний вызов",
    "col.hour": "Вызовы / ошибки за час",
    "col.day": "Вызовы / ошибки за 24 ч",
    "any_method": "любые методы",
    "any_address": "любые",
    "no_events": "никакие",
    "save": "Сохранить",
    "revoke": "Отозвать",
    "revoked": "отозван {when}",
    "never": "не было (за 31 день)",
    "revoke.title": "Отозвать клиента {name}?",
    "revoke.text": "Его ключ сразу перестанет работать на всех репликах. Отменить нельзя.",
    "confirm": "Отозвать ключ",
    "cancel": "Отмена",
    "done.revoked": "Клиент {name} отозван.",
    "done.methods": "Методы клиента {name} сохранены.",
    "calls.title": "Отклонённые и неудачные вызовы",
    "calls.note": "За последние 7 дней, не больше 10 000; ключи, токены и параметры не хранятся.",
    "calls.dropped": "Этот процесс пропустил {n} отказов во время потока (хранится не больше "
    "1 000 в секунду).",
    "calls.none": "Отказов нет.",
    "filter.code": "Код",
    "filter.client": "Клиент",
    "filter.portal": "Портал",
    "filter.apply": "Показать",
    "col.time": "Время",
    "col.code": "Код",
    "col.status": "Статус",
    "col.surface": "Интерфейс",
    "col.method": "Метод",
    "col.address": "Адрес",
    "jobs.title": "Задания",
    "jobs.none": "Заданий нет.",
    "col.job": "Задание",
    "col.commands": "Команды",
    "col.finished": "Завершено",
    "events.title": "Подписки на события",
    "events.none": "Подписок на события нет.",
    "col.event": "Событие",
    "col.mode": "Режим",
    "col.since": "С",
    "events.log": "Журнал событий",
    "col.last_seq": "Последнее событие",
    "col.purged": "Удалены до",
    "unit.s": "с",
    "unit.min": "мин",
    "unit.h": "ч",
    "unit.d": "д",
}

_TEXTS: Final = {"en": EN, "ru": RU}
if EN.keys() != RU.keys():
    raise RuntimeError(f"admin page strings without a translation: {EN.keys() ^ RU.keys()}")


def texts(lang: str) -> dict[str, str]:
    """The strings of ``lang`` (English for a language the page does not speak)."""
    return _TEXTS.get(lang, EN)


def language(cookie: str | None, accept_language: str | None) -> str:
    """The page's language: the ``lang`` cookie, else the browser's first choice that the
    page speaks (by ``q``), else English."""
    if cookie in LANGUAGES:
        return cookie
    choices: list[tuple[float, int, str]] = []
    for index, part in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            choices.append((-quality, index, primary))
    return min(choices)[2] if choices else DEFAULT
