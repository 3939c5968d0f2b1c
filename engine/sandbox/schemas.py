"""Object types and their default property schemas, shaped like a fresh HubSpot portal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Option = tuple[str, str]  # (label, value)
MAX_UNIQUE_PROPERTIES = 10

# type -> fieldTypes HubSpot accepts for it (HUBSPOT_API.md, "Properties v3").
FIELD_TYPES: dict[str, frozenset[str]] = {
    "bool": frozenset({"booleancheckbox", "calculation_equation"}),
    "enumeration": frozenset(
        {"booleancheckbox", "checkbox", "radio", "select", "calculation_equation"}
    ),
    "date": frozenset({"date"}),
    "datetime": frozenset({"date"}),
    "string": frozenset(
        {"text", "textarea", "file", "html", "phonenumber", "calculation_equation"}
    ),
    "number": frozenset({"number", "calculation_equation"}),
}

@dataclass(frozen=True, slots=True)
class PropertyDef:
    """One property definition, as `GET /crm/v3/properties/{type}` describes it."""

    name: str
    label: str
    type: str
    field_type: str
    group_name: str = "contactinformation"
    description: str = ""
    options: tuple[Option, ...] = ()
    unique: bool = False
    calculated: bool = False
    hidden: bool = False
    hubspot_defined: bool = True
    external_options: bool = False
    read_only_value: bool = False
    read_only_definition: bool = True
    archivable: bool = False
    display_order: int = -1

    @property
    def writable(self) -> bool:
        return not (self.read_only_value or self.calculated)

    @property
    def is_multi(self) -> bool:
        return self.type == "enumeration" and self.field_type == "checkbox"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "groupName": self.group_name,
            "description": self.description,
            "options": [
                {"label": label, "value": value, "displayOrder": i, "hidden": False}
                for i, (label, value) in enumerate(self.options)
            ],
            "displayOrder": self.display_order,
            "hasUniqueValue": self.unique,
            "calculated": self.calculated,
            "hidden": self.hidden,
            "hubspotDefined": self.hubspot_defined,
            "externalOptions": self.external_options,
            "formField": not self.read_only_value,
            "createdAt": "2019-08-06T02:43:00.000Z",
            "updatedAt": "2019-08-06T02:43:00.000Z",
            "archived": False,
            "modificationMetadata": {
                "readOnlyValue": self.read_only_value or self.calculated,
                "readOnlyDefinition": self.read_only_definition,
                "archivable": self.archivable,
            },
        }


@dataclass(slots=True)
class ObjectType:
    """An object type: its ids, labels and property schema (mutable: properties can be added)."""

    type_id: str
    name: str
    singular: str
    modified_property: str = "hs_lastmodifieddate"
    required_any: tuple[str, ...] = ()
    properties: dict[str, PropertyDef] = field(default_factory=dict)
    custom: bool = False

    @property
    def unique_properties(self) -> list[str]:
        return [p.name for p in self.properties.values() if p.unique]

    @property
    def label(self) -> str:
        return self.singular[:1].upper() + self.singular[1:]


def _opts(*pairs: str) -> tuple[Option, ...]:
    """`_opts("Lead", "lead", ...)` -> ((label, value), ...)."""
    return tuple((pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2))


BOOL_OPTIONS = _opts("True", "true", "False", "false")
LIFECYCLE = _opts(
    "Subscriber", "subscriber",
    "Lead", "lead",
    "Marketing Qualified Lead", "marketingqualifiedlead",
    "Sales Qualified Lead", "salesqualifiedlead",
    "Opportunity", "opportunity",
    "Customer", "customer",
    "Evangelist", "evangelist",
    "Other", "other",
)  # fmt: skip


def _texts(group: str, *pairs: str) -> list[PropertyDef]:
    """`_texts(group, "city", "City", ...)` -> plain text string properties, in order."""
    return [PropertyDef(name, label, "string", "text", group) for name, label in _opts(*pairs)]


def _common(modified: str, group: str) -> list[PropertyDef]:
    """Read-only system properties every object has."""
    return [
        PropertyDef("hs_object_id", "Record ID", "number", "number", group,
                    "The unique ID for this record.", read_only_value=True),
        PropertyDef("createdate", "Create Date", "datetime", "date", group,
                    "The date the record was created.", read_only_value=True),
        PropertyDef(modified, "Last Modified Date", "datetime", "date", group,
                    "Most recent timestamp of any property update.", read_only_value=True),
    ]


def _contacts() -> ObjectType:
    g = "contactinformation"
    return _object_type("0-1", "contacts", "contact", [
        PropertyDef("email", "Email", "string", "text", g, "A contact's email address",
                    unique=True),
        PropertyDef("firstname", "First Name", "string", "text", g, "A contact's first name"),
        PropertyDef("lastname", "Last Name", "string", "text", g, "A contact's last name"),
        PropertyDef("phone", "Phone Number", "string", "phonenumber", g,
                    "A contact's primary phone number"),
        PropertyDef("mobilephone", "Mobile Phone Number", "string", "phonenumber", g),
        *_texts(g, "company", "Company Name", "website", "Website URL", "jobtitle", "Job Title",
                "address", "Street Address", "city", "City", "state", "State/Region",
                "zip", "Postal Code", "country", "Country/Region"),
        PropertyDef("message", "Message", "string", "textarea", g),
        PropertyDef("lifecyclestage", "Lifecycle Stage", "enumeration", "radio", g,
                    "The qualification of contacts to sales readiness.", LIFECYCLE),
        PropertyDef("hs_lead_status", "Lead Status", "enumeration", "radio", "sales_properties",
                    "The contact's sales, prospecting or outreach status", _opts(
                        "New", "NEW", "Open", "OPEN", "In Progress", "IN_PROGRESS",
                        "Open Deal", "OPEN_DEAL", "Unqualified", "UNQUALIFIED",
                        "Attempted to Contact", "ATTEMPTED_TO_CONTACT",
                        "Connected", "CONNECTED", "Bad Timing", "BAD_TIMING")),
        PropertyDef("date_of_birth", "Date of birth", "date", "date", g),
        PropertyDef("hs_last_sales_activity_timestamp", "Last Engagement Date", "datetime",
                    "date", "sales_properties"),
        PropertyDef("hs_email_optout", "Unsubscribed from all email", "bool",
                    "booleancheckbox", "emailinformation", options=BOOL_OPTIONS),
        PropertyDef("hs_buying_role", "Buying Role", "enumeration", "checkbox",
                    "sales_properties", "Role the contact plays in the sales process",
                    _opts("Blocker", "BLOCKER", "Budget Holder", "BUDGET_HOLDER",
                          "Champion", "CHAMPION", "Decision Maker", "DECISION_MAKER",
                          "End User", "END_USER", "Executive Sponsor", "EXECUTIVE_SPONSOR",
                          "Influencer", "INFLUENCER", "Legal & Compliance",
                          "LEGAL_AND_COMPLIANCE", "Other", "OTHER")),
        PropertyDef("annualrevenue", "Annual Revenue", "string", "text", g),
        PropertyDef("numemployees", "Number of Employees", "enumeration", "select", g,
                    options=_opts("1-5", "1-5", "5-25", "5-25", "25-50", "25-50",
                                  "50-100", "50-100", "100-500", "100-500",
                                  "500-1000", "500-1000", "1000+", "1000+")),
        PropertyDef("hs_analytics_num_page_views", "Number of Pageviews", "number", "number",
                    "analyticsinformation", read_only_value=True),
        PropertyDef("total_revenue", "Total Revenue", "number", "number", "deal_information"),
        PropertyDef("num_associated_deals", "Associated Deals", "number", "number",
                    "deal_information", calculated=True),
        PropertyDef("hs_full_name_or_email", "Full name or email", "string",
                    "calculation_equation", g, calculated=True),
    ], modified="lastmodifieddate", required=("email", "firstname", "lastname"),
        owner_group="sales_properties")


def _companies() -> ObjectType:
    g = "companyinformation"
    return _object_type("0-2", "companies", "company", [
        PropertyDef("domain", "Company Domain Name", "string", "text", g,
                    "The domain name of the company", unique=True),
        PropertyDef("name", "Company name", "string", "text", g, "The name of the company"),
        PropertyDef("industry", "Industry", "enumeration", "select", g, options=_opts(
            "Accounting", "ACCOUNTING", "Airlines/Aviation", "AIRLINES_AVIATION",
            "Banking", "BANKING", "Computer Software", "COMPUTER_SOFTWARE",
            "Financial Services", "FINANCIAL_SERVICES", "Health, Wellness and Fitness",
            "HEALTH_WELLNESS_AND_FITNESS", "Information Technology and Services",
            "INFORMATION_TECHNOLOGY_AND_SERVICES", "Retail", "RETAIL",
            "Telecommunications", "TELECOMMUNICATIONS")),
        PropertyDef("numberofemployees", "Number of Employees", "number", "number", g),
        PropertyDef("annualrevenue", "Annual Revenue", "number", "number", g),
        PropertyDef("phone", "Phone Number", "string", "phonenumber", g),
        *_texts(g, "website", "Website URL", "city", "City", "state", "State/Region",
                "country", "Country/Region"),
        PropertyDef("description", "Description", "string", "textarea", g),
        PropertyDef("founded_year", "Year Founded", "string", "text", g),
        PropertyDef("is_public", "Is Public", "bool", "booleancheckbox", g,
                    options=BOOL_OPTIONS),
        PropertyDef("lifecyclestage", "Lifecycle Stage", "enumeration", "radio", g,
                    options=LIFECYCLE),
        PropertyDef("type", "Type", "enumeration", "select", g, options=_opts(
            "Prospect", "PROSPECT", "Partner", "PARTNER", "Reseller", "RESELLER",
            "Vendor", "VENDOR", "Other", "OTHER")),
        PropertyDef("hs_num_child_companies", "Number of child companies", "number", "number",
                    g, calculated=True),
    ], owner_group=g)


def _deals() -> ObjectType:
    g = "dealinformation"
    return _object_type("0-3", "deals", "deal", [
        PropertyDef("dealname", "Deal Name", "string", "text", g, "The name given to this deal."),
        PropertyDef("amount", "Amount", "number", "number", g, "The total amount of the deal"),
        PropertyDef("dealstage", "Deal Stage", "enumeration", "radio", g,
                    "The stage of the deal.", external_options=True),
        PropertyDef("pipeline", "Pipeline", "enumeration", "select", g,
                    "The pipeline the deal is in.", external_options=True),
        PropertyDef("closedate", "Close Date", "datetime", "date", g,
                    "Date the deal was closed."),
        PropertyDef("dealtype", "Deal Type", "enumeration", "radio", g, options=_opts(
            "New Business", "newbusiness", "Existing Business", "existingbusiness")),
        PropertyDef("description", "Deal Description", "string", "textarea", g),
        PropertyDef("hs_priority", "Priority", "enumeration", "select", g,
                    options=_opts("Low", "low", "Medium", "medium", "High", "high")),
        PropertyDef("hs_is_closed", "Is Deal Closed?", "bool", "booleancheckbox", g,
                    options=BOOL_OPTIONS, calculated=True),
    ], owner_group=g)


def _tickets() -> ObjectType:
    g = "ticketinformation"
    return _object_type("0-5", "tickets", "ticket", [
        PropertyDef("subject", "Ticket name", "string", "text", g, "Short summary of ticket"),
        PropertyDef("content", "Ticket description", "string", "textarea", g),
        PropertyDef("hs_pipeline", "Pipeline", "enumeration", "select", g,
                    external_options=True),
        PropertyDef("hs_pipeline_stage", "Ticket status", "enumeration", "select", g,
                    external_options=True),
        PropertyDef("hs_ticket_priority", "Priority", "enumeration", "select", g,
                    options=_opts("Low", "LOW", "Medium", "MEDIUM", "High", "HIGH",
                                  "Urgent", "URGENT")),
        PropertyDef("hs_ticket_category", "Category", "enumeration", "checkbox", g,
                    options=_opts("Product issue", "PRODUCT_ISSUE", "Billing issue",
                                  "BILLING_ISSUE", "Feature request", "FEATURE_REQUEST",
                                  "General inquiry", "GENERAL_INQUIRY")),
        PropertyDef("closed_date", "Close date", "datetime", "date", g),
    ], owner_group=g)


def _object_type(type_id: str, name: str, singular: str, extra: list[PropertyDef], *,
                 modified: str = "hs_lastmodifieddate", required: tuple[str, ...] = (),
                 owner_group: str | None = None) -> ObjectType:
    """An object type: the system properties, `extra`, then the owner when it has one."""
    props = [*_common(modified, f"{singular}information"), *extra]
    if owner_group is not None:
        props.append(PropertyDef("hubspot_owner_id", f"{singular.capitalize()} owner",
                                 "enumeration", "select", owner_group, external_options=True))
    return ObjectType(type_id, name, singular, modified, required, {p.name: p for p in props})


def default_object_types() -> list[ObjectType]:
    """A fresh portal: the four main objects with realistic schemas, plus a few more."""
    return [
        _contacts(),
        _companies(),
        _deals(),
        _tickets(),
        _object_type("0-7", "products", "product", [
            PropertyDef("name", "Name", "string", "text", "productinformation"),
            PropertyDef("price", "Unit price", "number", "number", "productinformation"),
            PropertyDef("hs_sku", "SKU", "string", "text", "productinformation"),
        ]),
        _object_type("0-8", "line_items", "line_item", [
            PropertyDef("name", "Name", "string", "text", "lineiteminformation"),
            PropertyDef("quantity", "Quantity", "number", "number", "lineiteminformation"),
            PropertyDef("price", "Unit price", "number", "number", "lineiteminformation"),
        ]),
        _object_type("0-46", "notes", "note", [
            PropertyDef("hs_note_body", "Note body", "string", "html", "engagement"),
            PropertyDef("hs_timestamp", "Activity date", "datetime", "date", "engagement"),
        ]),
    ]
