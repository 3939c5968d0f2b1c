"""Search v3: operators, sorts, paging, the 10,000-result cap."""

from __future__ import annotations

import pytest

SEARCH = "/crm/v3/objects/contacts/search"


@pytest.fixture
async def people(api):
    return await api.create_contacts(
        {"email": "ann@example.com", "firstname": "Ann", "lifecyclestage": "lead",
         "date_of_birth": "1990-05-01", "hs_buying_role": "CHAMPION;BLOCKER"},
        {"email": "bob@example.org", "firstname": "Bob", "lifecyclestage": "customer",
         "date_of_birth": "1985-01-01"},
        {"email": "cid@example.com", "firstname": "Cid Jr", "lifecyclestage": "lead"},
        {"firstname": "Dee"},
    )


async def _ids(api, filters, **extra):
    body = {"filterGroups": [{"filters": filters}] if filters else [], "limit": 100, **extra}
    reply = await api.post(SEARCH, body)
    assert reply.status == 200, reply.body
    return [r["id"] for r in reply.body["results"]]


@pytest.mark.parametrize(("filters", "expected"), [
    ([{"propertyName": "lifecyclestage", "operator": "EQ", "value": "lead"}], [0, 2]),
    ([{"propertyName": "lifecyclestage", "operator": "NEQ", "value": "lead"}], [1, 3]),
    ([{"propertyName": "firstname", "operator": "EQ", "value": "ann"}], [0]),
    ([{"propertyName": "lifecyclestage", "operator": "IN", "values": ["customer", "x"]}], [1]),
    ([{"propertyName": "lifecyclestage", "operator": "NOT_IN", "values": ["lead"]}], [1, 3]),
    ([{"propertyName": "email", "operator": "HAS_PROPERTY"}], [0, 1, 2]),
    ([{"propertyName": "email", "operator": "NOT_HAS_PROPERTY"}], [3]),
    ([{"propertyName": "email", "operator": "CONTAINS_TOKEN", "value": "*@example.com"}],
     [0, 2]),
    ([{"propertyName": "firstname", "operator": "CONTAINS_TOKEN", "value": "jr"}], [2]),
    ([{"propertyName": "date_of_birth", "operator": "LT", "value": "1989-01-01"}], [1]),
    ([{"propertyName": "date_of_birth", "operator": "BETWEEN", "value": "1980-01-01",
       "highValue": "1995-01-01"}], [0, 1]),
    ([{"propertyName": "hs_buying_role", "operator": "EQ", "value": "BLOCKER"}], [0]),
    ([{"propertyName": "lifecyclestage", "operator": "EQ", "value": "lead"},
      {"propertyName": "email", "operator": "CONTAINS_TOKEN", "value": "cid@example.com"}],
     [2]),
])
async def test_operators(api, people, filters, expected):
    assert await _ids(api, filters) == [people[i] for i in expected]


async def test_filter_groups_are_ored(api, people):
    reply = await api.post(SEARCH, {"filterGroups": [
        {"filters": [{"propertyName": "firstname", "operator": "EQ", "value": "Ann"}]},
        {"filters": [{"propertyName": "firstname", "operator": "EQ", "value": "Dee"}]},
    ]})
    assert [r["id"] for r in reply.body["results"]] == [people[0], people[3]]
    assert reply.body["total"] == 2


async def test_hs_object_id_compares_numerically_and_sorts(api):
    ids = await api.create_contacts(*({"firstname": f"n{i}"} for i in range(12)))
    pivot = ids[8]  # e.g. "9" < "10" numerically but not as text
    got = await _ids(api, [{"propertyName": "hs_object_id", "operator": "GT", "value": pivot}],
                     sorts=[{"propertyName": "hs_object_id", "direction": "ASCENDING"}])
    assert got == ids[9:]
    assert await _ids(api, [], sorts=["-hs_object_id"]) == ids[::-1]


async def test_createdate_is_filterable(api, people):
    reply = await api.post(SEARCH, {"filterGroups": [{"filters": [
        {"propertyName": "createdate", "operator": "GTE", "value": "2000-01-01T00:00:00Z"}]}],
        "properties": ["firstname"]})
    assert reply.body["total"] == 4
    assert reply.body["results"][0]["properties"]["firstname"] == "Ann"


async def test_paging_and_the_10000_cap(api, sandbox):
    await api.create_contacts(*({"firstname": "x"} for _ in range(100)))
    await _seed(api, 10_050)
    first = await api.post(SEARCH, {"limit": 200})
    assert first.body["total"] == 10_150
    assert first.body["paging"]["next"]["after"] == "200"
    last = await api.post(SEARCH, {"limit": 200, "after": "9800"})
    assert last.status == 200
    assert len(last.body["results"]) == 200 and "paging" not in last.body
    past = await api.post(SEARCH, {"limit": 200, "after": "10000"})
    assert past.status == 400
    assert past.body["category"] == "VALIDATION_ERROR"
    too_many = await api.post(SEARCH, {"limit": 201})
    assert too_many.status == 400


async def _seed(api, n):
    """Many contacts fast, through the API (100 per batch, concurrently)."""
    import asyncio

    async def one(start):
        await api.create_contacts(*({"firstname": f"s{start + i}"} for i in range(100)))

    await asyncio.gather(*(one(s) for s in range(0, n - n % 100, 100)))
    if n % 100:
        await api.create_contacts(*({"firstname": "r"} for _ in range(n % 100)))


async def test_unknown_property_in_filter_is_400(api):
    reply = await api.post(SEARCH, {"filterGroups": [{"filters": [
        {"propertyName": "nope", "operator": "EQ", "value": "x"}]}]})
    assert reply.status == 400
