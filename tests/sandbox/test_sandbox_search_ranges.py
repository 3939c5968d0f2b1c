"""Searches bounded by hs_object_id (the exporter's partitions) answer exactly like a scan."""

import pytest

PATH = "/crm/v3/objects/contacts/search"


@pytest.mark.parametrize(
    "filters",
    [
        [{"propertyName": "hs_object_id", "operator": "GT", "value": "{a}"}],
        [{"propertyName": "hs_object_id", "operator": "GTE", "value": "{a}"},
         {"propertyName": "hs_object_id", "operator": "LT", "value": "{b}"}],
        [{"propertyName": "hs_object_id", "operator": "BETWEEN", "value": "{a}",
          "highValue": "{b}"}, {"propertyName": "firstname", "operator": "EQ", "value": "even"}],
        [{"propertyName": "hs_object_id", "operator": "EQ", "value": "{a}"}],
    ],
)
async def test_id_ranges_match_a_full_scan(api, filters):
    ids = await api.create_contacts(*({"email": f"r{i}@x.com",
                                       "firstname": "even" if i % 2 == 0 else "odd"}
                                      for i in range(60)))
    numbers = sorted(int(i) for i in ids)
    a, b = numbers[10], numbers[40]
    await api.delete(f"/crm/v3/objects/contacts/{numbers[20]}")  # archived: never matches
    concrete = [{k: v.format(a=a, b=b) if isinstance(v, str) else v for k, v in f.items()}
                for f in filters]
    reply = await api.post(PATH, {"filterGroups": [{"filters": concrete}], "limit": 200,
                                  "sorts": [{"propertyName": "hs_object_id",
                                             "direction": "ASCENDING"}],
                                  "properties": ["firstname"]})
    assert reply.status == 200, reply.body

    def wanted(n: int) -> bool:
        ok = n != numbers[20]
        for f in concrete:
            if f["propertyName"] == "firstname":
                ok = ok and ((numbers.index(n) % 2 == 0) == (f["value"] == "even"))
                continue
            value = int(f["value"])
            ok = ok and {"GT": n > value, "GTE": n >= value, "LT": n < value,
                         "EQ": n == value,
                         "BETWEEN": value <= n <= int(f.get("highValue", 0))}[f["operator"]]
        return ok

    expected = [str(n) for n in numbers if wanted(n)]
    assert [r["id"] for r in reply.body["results"]] == expected
    assert reply.body["total"] == len(expected)
