"""Contract: HubSpot's official Python client talks to the sandbox and deserialises every answer.

The client is synchronous (urllib3), so each call runs in a worker thread while the sandbox
serves on the test's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from hubspot import HubSpot
from hubspot.crm.associations.v4 import (
    AssociationSpec,
    BatchInputPublicAssociationMultiPost,
    BatchInputPublicFetchAssociationsBatchRequest,
    PublicAssociationMultiPost,
    PublicFetchAssociationsBatchRequest,
)
from hubspot.crm.associations.v4.schema import PublicAssociationDefinitionCreateRequest
from hubspot.crm.companies import BatchInputSimplePublicObjectBatchInputForCreate as CoCreate
from hubspot.crm.companies import SimplePublicObjectInputForCreate as CoInput
from hubspot.crm.contacts import (
    ApiException,
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchInputSimplePublicObjectId,
    BatchReadInputSimplePublicObjectId,
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
    SimplePublicObjectBatchInput,
    SimplePublicObjectBatchInputUpsert,
    SimplePublicObjectId,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.properties import ApiException as PropertiesApiException
from hubspot.crm.properties import PropertyCreate


@pytest.fixture
def client(sandbox) -> HubSpot:
    return HubSpot(access_token=sandbox.token, host=sandbox.base_url)


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


def _create_inputs(n: int, start: int = 0) -> BatchInputSimplePublicObjectBatchInputForCreate:
    return BatchInputSimplePublicObjectBatchInputForCreate(inputs=[
        SimplePublicObjectInputForCreate(properties={
            "email": f"p{i}@example.com", "firstname": f"P{i}", "lifecyclestage": "lead"})
        for i in range(start, start + n)
    ])


async def test_contacts_batch_create_read_update_upsert_and_archive(client, sandbox):
    batch = client.crm.contacts.batch_api
    created = await call(batch.create, _create_inputs(3))
    assert created.status == "COMPLETE"
    ids = [r.id for r in created.results]
    assert created.results[0].created_at.year >= 2024

    read = await call(batch.read, BatchReadInputSimplePublicObjectId(
        inputs=[SimplePublicObjectId(id=i) for i in ids], properties=["lifecyclestage"]))
    assert sorted(r.id for r in read.results) == sorted(ids)
    assert {r.properties["lifecyclestage"] for r in read.results} == {"lead"}

    updated = await call(batch.update, BatchInputSimplePublicObjectBatchInput(inputs=[
        SimplePublicObjectBatchInput(id=ids[0], properties={"lastname": "Updated"})]))
    assert updated.results[0].properties["lastname"] == "Updated"

    upserted = await call(batch.upsert, BatchInputSimplePublicObjectBatchInputUpsert(inputs=[
        SimplePublicObjectBatchInputUpsert(id="p1@example.com", id_property="email",
                                           properties={"phone": "555"}),
        SimplePublicObjectBatchInputUpsert(id="new@example.com", id_property="email",
                                           properties={"firstname": "New"}),
    ]))
    assert sorted(r.new for r in upserted.results) == [False, True]

    await call(batch.archive, BatchInputSimplePublicObjectId(
        inputs=[SimplePublicObjectId(id=ids[2])]))
    assert len(sandbox.records("contacts")) == 3


async def test_contacts_batch_read_with_missing_ids_deserialises_207(client):
    batch = client.crm.contacts.batch_api
    created = await call(batch.create, _create_inputs(1))
    read = await call(batch.read, BatchReadInputSimplePublicObjectId(
        inputs=[SimplePublicObjectId(id=created.results[0].id), SimplePublicObjectId(id="9999")],
        properties=[]))
    assert read.num_errors == 1
    assert read.errors[0].category == "OBJECT_NOT_FOUND"


async def test_validation_error_surfaces_as_api_exception(client):
    bad = BatchInputSimplePublicObjectBatchInputForCreate(inputs=[
        SimplePublicObjectInputForCreate(properties={"email": "x@example.com", "nope": "1"})])
    with pytest.raises(ApiException) as caught:
        await call(client.crm.contacts.batch_api.create, bad)
    assert caught.value.status == 400
    assert "PROPERTY_DOESNT_EXIST" in caught.value.body


async def test_list_paging_for_contacts_and_companies(client):
    await call(client.crm.contacts.batch_api.create, _create_inputs(7))
    await call(client.crm.companies.batch_api.create, CoCreate(inputs=[
        CoInput(properties={"domain": f"c{i}.com", "name": f"C{i}"}) for i in range(5)]))
    for api, total in ((client.crm.contacts.basic_api, 7), (client.crm.companies.basic_api, 5)):
        seen, after = [], None
        while True:
            page = await call(api.get_page, limit=3, after=after, archived=False)
            seen += [r.id for r in page.results]
            if page.paging is None:
                break
            after = page.paging.next.after
        assert len(seen) == len(set(seen)) == total
    single = await call(client.crm.companies.basic_api.get_by_id, seen[0],
                        properties=["name"])
    assert single.properties["name"] == "C0"


async def test_search_and_its_cap(client):
    search = client.crm.contacts.search_api
    for start in range(0, 300, 100):
        await call(client.crm.contacts.batch_api.create, _create_inputs(100, start))
    request = PublicObjectSearchRequest(
        filter_groups=[FilterGroup(filters=[
            Filter(property_name="hs_object_id", operator="GT", value="100")])],
        sorts=["hs_object_id"], properties=["email"], limit=200)
    page = await call(search.do_search, public_object_search_request=request)
    assert page.total == 200
    assert len(page.results) == 200 and page.results[0].id == "101"
    past = PublicObjectSearchRequest(limit=100, after="10000")
    with pytest.raises(ApiException) as caught:
        await call(search.do_search, public_object_search_request=past)
    assert caught.value.status == 400


async def test_properties_read_and_create(client):
    core = client.crm.properties.core_api
    listed = await call(core.get_all, "contacts")
    by_name = {p.name: p for p in listed.results}
    stage = by_name["lifecyclestage"]
    assert [o.value for o in stage.options][:3] == ["subscriber", "lead",
                                                    "marketingqualifiedlead"]
    assert stage.options[2].label == "Marketing Qualified Lead"
    assert by_name["email"].has_unique_value is True
    assert by_name["createdate"].modification_metadata.read_only_value is True
    created = await call(core.create, "contacts", PropertyCreate(
        name="legacy_id", label="Legacy id", type="string", field_type="text",
        group_name="contactinformation", has_unique_value=True))
    assert created.has_unique_value is True and created.hubspot_defined is False
    one = await call(core.get_by_name, "contacts", "legacy_id")
    assert one.name == "legacy_id"
    with pytest.raises(PropertiesApiException) as caught:
        await call(core.create, "contacts", PropertyCreate(
            name="legacy_id", label="Again", type="string", field_type="text",
            group_name="contactinformation"))
    assert caught.value.status == 409


async def test_v4_labels_batch_create_and_batch_read(client):
    contacts = await call(client.crm.contacts.batch_api.create, _create_inputs(2))
    companies = await call(client.crm.companies.batch_api.create, CoCreate(inputs=[
        CoInput(properties={"domain": "acme.com"})]))
    cid, coid = contacts.results[0].id, companies.results[0].id
    definitions = client.crm.associations.v4.schema.definitions_api
    made = await call(definitions.create, "contacts", "companies",
                      PublicAssociationDefinitionCreateRequest(
                          name="billing", label="Billing", inverse_label="Billed"))
    type_id = made.results[0].type_id
    labels = await call(definitions.get_all, "contacts", "companies")
    assert {279, 1, type_id} <= {s.type_id for s in labels.results}

    batch = client.crm.associations.v4.batch_api
    created = await call(batch.create, "contacts", "companies",
                         BatchInputPublicAssociationMultiPost(inputs=[
                             PublicAssociationMultiPost(
                                 _from=SimplePublicObjectId(id=cid),
                                 to=SimplePublicObjectId(id=coid),
                                 types=[AssociationSpec(association_category="USER_DEFINED",
                                                        association_type_id=type_id)])]))
    assert created.results[0].labels == ["Billing"]
    read = await call(batch.get_page, "companies", "contacts",
                      BatchInputPublicFetchAssociationsBatchRequest(
                          inputs=[PublicFetchAssociationsBatchRequest(id=coid)]))
    [result] = read.results
    assert str(result.to[0].to_object_id) == cid
    assert {t.label for t in result.to[0].association_types} == {None, "Billed"}
