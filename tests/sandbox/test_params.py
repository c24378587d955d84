"""PHP bracket parameters: what a Bitrix24 method sees of a query string or form."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from b24gate.sandbox._params import build_php_query, parse_php_pairs, parse_php_query


def test_bracket_key_becomes_a_map() -> None:
    assert parse_php_query("fields[TITLE]=x&fields[STAGE_ID]=NEW") == {
        "fields": {"TITLE": "x", "STAGE_ID": "NEW"}
    }


def test_filter_operator_stays_part_of_the_key() -> None:
    # As clients encode them: `=` as %3D and `%` as %25 inside the key.
    assert parse_php_query("filter[>ID]=5&filter[!%3DSTAGE_ID]=WON&filter[%25TITLE]=a") == {
        "filter": {">ID": "5", "!=STAGE_ID": "WON", "%TITLE": "a"}
    }


def test_empty_brackets_append_to_a_list() -> None:
    assert parse_php_query("select[]=ID&select[]=TITLE") == {"select": ["ID", "TITLE"]}


def test_nested_brackets() -> None:
    query = (
        "fields[PHONE][0][VALUE]=1&fields[PHONE][0][VALUE_TYPE]=WORK"
        "&fields[PHONE][1][VALUE]=2&fields[NAME]=Ivan"
    )
    assert parse_php_query(query) == {
        "fields": {
            "PHONE": [{"VALUE": "1", "VALUE_TYPE": "WORK"}, {"VALUE": "2"}],
            "NAME": "Ivan",
        }
    }


def test_keys_zero_to_n_minus_one_make_a_list() -> None:
    assert parse_php_query("id[0]=7&id[1]=8&id[2]=9") == {"id": ["7", "8", "9"]}


def test_other_integer_keys_make_a_map() -> None:
    # PHP keeps these as arrays with holes or out-of-order keys: json_encode writes objects.
    assert parse_php_query("id[1]=a&id[2]=b") == {"id": {"1": "a", "2": "b"}}
    assert parse_php_query("id[0]=a&id[2]=b") == {"id": {"0": "a", "2": "b"}}
    assert parse_php_query("id[1]=a&id[0]=b") == {"id": {"1": "a", "0": "b"}}
    # An empty index continues after the largest integer key, as PHP's $a[] does.
    assert parse_php_query("id[]=a&id[5]=b&id[]=c") == {"id": {"0": "a", "5": "b", "6": "c"}}


def test_top_level_integer_keys_stay_a_map() -> None:
    # Regression: a body of only `0=a` used to turn the whole parameter set into a list.
    assert parse_php_query("0=a") == {"0": "a"}
    assert parse_php_pairs([("0", "a"), ("1", "b")]) == {"0": "a", "1": "b"}


def test_url_encoded_brackets() -> None:
    assert parse_php_query("fields%5BTITLE%5D=x&select%5B%5D=ID&select%5B%5D=TITLE") == {
        "fields": {"TITLE": "x"},
        "select": ["ID", "TITLE"],
    }


def test_cyrillic_values() -> None:
    query = (
        "fields%5BTITLE%5D=%D0%A1%D0%B4%D0%B5%D0%BB%D0%BA%D0%B0+%E2%84%961"
        "&name=%D0%90%D0%BD%D0%BD%D0%B0"
    )
    assert parse_php_query(query) == {"fields": {"TITLE": "Сделка №1"}, "name": "Анна"}


def test_plain_keys_and_blank_values() -> None:
    assert parse_php_query("id=5&auth=abc&comment=") == {"id": "5", "auth": "abc", "comment": ""}
    assert parse_php_query("") == {}


def test_a_later_plain_value_replaces_an_array_and_vice_versa() -> None:
    assert parse_php_query("a[b]=1&a=2") == {"a": "2"}
    assert parse_php_query("a=2&a[b]=1") == {"a": {"b": "1"}}


def test_malformed_bracket_key_is_not_nested() -> None:
    # An unclosed bracket is no array: the method never sees a `fields` map.
    parsed = parse_php_query("fields[TITLE=x&id=5")
    assert "fields" not in parsed
    assert parsed["id"] == "5"
    assert list(parsed.values()) == ["x", "5"]
    # PHP ignores whatever follows the last closing bracket.
    assert parse_php_query("fields[TITLE]junk=x") == {"fields": {"TITLE": "x"}}


def test_build_php_query_writes_brackets() -> None:
    query = build_php_query(
        {
            "fields": {"TITLE": "Сделка №1", "PHONE": [{"VALUE": "1"}]},
            "select": ["ID", "TITLE"],
            "skip": None,
            "flag": True,
        }
    )
    assert query == (
        "fields[TITLE]=%D0%A1%D0%B4%D0%B5%D0%BB%D0%BA%D0%B0%20%E2%84%961"
        "&fields[PHONE][0][VALUE]=1&select[0]=ID&select[1]=TITLE&flag=1"
    )


# Names PHP keeps as they are: no brackets, and no spaces or dots, which PHP turns into `_`
# in top-level names. Text values may be anything UTF-8 can carry.
_NAME_CHARS = st.characters(codec="utf-8", exclude_categories=["Cc", "Z"], exclude_characters="[].")
_names = st.text(_NAME_CHARS, min_size=1, max_size=12)
_texts = st.text(st.characters(codec="utf-8"), max_size=20)


def _not_a_list(mapping: dict[str, str]) -> bool:
    # A map keyed 0..n-1 is a list in PHP; it would rightly come back as one.
    return list(mapping) != [str(i) for i in range(len(mapping))]


# Empty arrays vanish in http_build_query, so lists and maps have at least one item.
_values = st.one_of(
    _texts,
    st.lists(_texts, min_size=1, max_size=5),
    st.dictionaries(_names, _texts, min_size=1, max_size=5).filter(_not_a_list),
)


@given(st.dictionaries(_names, _values, max_size=6))
def test_build_then_parse_round_trips(params: dict[str, Any]) -> None:
    assert parse_php_query(build_php_query(params)) == params


@given(st.dictionaries(_names, st.one_of(st.none(), _texts), max_size=6))
def test_nulls_are_dropped_like_php(params: dict[str, str | None]) -> None:
    expected = {k: v for k, v in params.items() if v is not None}
    assert parse_php_query(build_php_query(params)) == expected
