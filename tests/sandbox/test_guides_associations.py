"""Associations as HubSpot's guides (../shared/seeds/) describe them: one primary company,
label names, the pairs that can be associated and the label limit. Each test quotes the
sentence it follows."""

from __future__ import annotations

import pytest

V4 = "/crm/v4/associations"
PRIMARY_CONTACT_TO_COMPANY, UNLABELED_CONTACT_TO_COMPANY = 1, 279
PRIMARY_COMPANY_TO_CONTACT = 2
PRIMARY_DEAL_TO_COMPANY, UNLABELED_DEAL_TO_COMPANY = 5, 341


async def _companies(api, n: int) -> list[str]:
    reply = await api.post("/crm/v3/objects/companies/batch/create", {"inputs": [
        {"properties": {"name": f"Co {i}", "domain": f"co{i}.example.com"}} for i in range(n)]})
    assert reply.status == 201
    return [r["id"] for r in reply.body["results"]]


async def _link(api, frm: str, to: str, from_id: str, to_id: str, type_id: int) -> None:
    reply = await api.post(f"{V4}/{frm}/{to}/batch/create", {"inputs": [
        {"from": {"id": from_id}, "to": {"id": to_id},
         "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}]}]})
    assert reply.status == 201, reply.body


def _types_by_target(sandbox, frm: str, to: str, from_id: str) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for edge in sandbox.edges(frm, to):
        if edge["fromId"] == from_id:
            out.setdefault(edge["toId"], set()).add(edge["typeId"])
    return out


# 003_b03644bcf593c30d.txt (associations): "Si une fiche d'informations a plusieurs
# entreprises associées, une seule peut être l'entreprise principale. Les autres associations
# peuvent être sans libellé ou avoir des libellés d'association personnalisés."


async def test_a_new_primary_company_demotes_the_old_one_to_unlabeled(api, sandbox):
    [contact] = await api.create_contacts({"email": "p@example.com"})
    old, new = await _companies(api, 2)
    await _link(api, "contacts", "companies", contact, old, PRIMARY_CONTACT_TO_COMPANY)
    await _link(api, "contacts", "companies", contact, new, PRIMARY_CONTACT_TO_COMPANY)
    assert _types_by_target(sandbox, "contacts", "companies", contact) == {
        old: {UNLABELED_CONTACT_TO_COMPANY},
        new: {PRIMARY_CONTACT_TO_COMPANY, UNLABELED_CONTACT_TO_COMPANY},
    }
    read = await api.post(f"{V4}/contacts/companies/batch/read", {"inputs": [{"id": contact}]})
    labels = {t["toObjectId"]: {a["label"] for a in t["associationTypes"]}
              for t in read.body["results"][0]["to"]}
    assert labels == {int(old): {None}, int(new): {"Primary", None}}
    # the companies' side agrees: only the new one is this contact's primary company
    assert _types_by_target(sandbox, "companies", "contacts", old) == {contact: {280}}
    assert PRIMARY_COMPANY_TO_CONTACT in _types_by_target(
        sandbox, "companies", "contacts", new)[contact]


async def test_primary_set_from_the_company_side_or_on_create_demotes_too(api, sandbox):
    [contact] = await api.create_contacts({"email": "p@example.com"})
    first, second = await _companies(api, 2)
    await _link(api, "contacts", "companies", contact, first, PRIMARY_CONTACT_TO_COMPANY)
    await _link(api, "companies", "contacts", second, contact, PRIMARY_COMPANY_TO_CONTACT)
    primaries = [c for c, types in _types_by_target(sandbox, "contacts", "companies",
                                                   contact).items()
                 if PRIMARY_CONTACT_TO_COMPANY in types]
    assert primaries == [second]
    created = await api.post("/crm/v3/objects/companies", {
        "properties": {"name": "Third", "domain": "third.example.com"},
        "associations": [{"to": {"id": contact}, "types": [
            {"associationCategory": "HUBSPOT_DEFINED",
             "associationTypeId": PRIMARY_COMPANY_TO_CONTACT}]}]})
    assert created.status == 201
    third = created.body["id"]
    by_target = _types_by_target(sandbox, "contacts", "companies", contact)
    assert [c for c, t in by_target.items() if PRIMARY_CONTACT_TO_COMPANY in t] == [third]
    assert set(by_target) == {first, second, third}


async def test_a_deal_has_one_primary_company(api, sandbox):
    deal = await api.post("/crm/v3/objects/deals", {"properties": {"dealname": "D"}})
    old, new = await _companies(api, 2)
    deal_id = deal.body["id"]
    await _link(api, "deals", "companies", deal_id, old, PRIMARY_DEAL_TO_COMPANY)
    await _link(api, "deals", "companies", deal_id, new, PRIMARY_DEAL_TO_COMPANY)
    assert _types_by_target(sandbox, "deals", "companies", deal_id) == {
        old: {UNLABELED_DEAL_TO_COMPANY},
        new: {PRIMARY_DEAL_TO_COMPANY, UNLABELED_DEAL_TO_COMPANY},
    }


@pytest.mark.parametrize("name", ["billing-contact", "2nd_contact", "9"])
async def test_label_names_with_hyphens_or_a_leading_digit_are_refused(api, name):
    # 003_b03644bcf593c30d.txt (associations): "nom : le nom interne du type d'association.
    # Cette valeur ne peut pas comprendre de traits d'union ni commencer par un caractère
    # numérique."
    reply = await api.post(f"{V4}/contacts/companies/labels",
                           {"name": name, "label": "Billing contact"})
    assert reply.status == 400
    assert reply.body["category"] == "VALIDATION_ERROR"
    assert name in reply.body["message"]
    listed = await api.get(f"{V4}/contacts/companies/labels")
    assert "Billing contact" not in {t["label"] for t in listed.body["results"]}
    ok = await api.post(f"{V4}/contacts/companies/labels",
                        {"name": "billing_contact_2", "label": "Billing contact"})
    assert ok.status == 200


async def test_ten_paired_labels_between_contacts_and_contacts(api):
    # 003_b03644bcf593c30d.txt (associations): "Vous pouvez créer jusqu'à 10 types
    # d'association entre chaque paire d'objets (par exemple : contacts et entreprises,
    # contacts et contacts)."
    for n in range(10):
        reply = await api.post(f"{V4}/contacts/contacts/labels",
                               {"name": f"mentor_{n}", "label": f"Mentor {n}",
                                "inverseLabel": f"Mentee {n}"})
        assert reply.status == 200, (n, reply.body)
    over = await api.post(f"{V4}/contacts/contacts/labels",
                          {"name": "mentor_x", "label": "Mentor x", "inverseLabel": "Mentee x"})
    assert over.status == 400


async def test_products_cannot_be_associated(api, sandbox):
    # 000_3332538e2716db95.txt (CRM overview), 0-7 Produits: "Les produits ne peuvent pas être
    # associés à d'autres objets, mais vous pouvez créer des lignes de produit en fonction des
    # produits et les associer à des transactions et à des devis."
    product = await api.post("/crm/v3/objects/products", {"properties": {"name": "P"}})
    deal = await api.post("/crm/v3/objects/deals", {"properties": {"dealname": "D"}})
    pair = {"inputs": [{"from": {"id": deal.body["id"]}, "to": {"id": product.body["id"]}}]}
    default = await api.post(f"{V4}/deals/products/batch/associate/default", pair)
    assert default.status == 400
    assert default.body["category"] == "VALIDATION_ERROR"
    assert sandbox.edges("deals", "products") == []
    assert (await api.get(f"{V4}/products/contacts/labels")).status == 400
    label = await api.post(f"{V4}/contacts/products/labels", {"name": "x", "label": "X"})
    assert label.status == 400
