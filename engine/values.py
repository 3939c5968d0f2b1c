"""Cleaning of messy values that HubSpot compares as text: company domains, e-mails, keys.

Shared by normalisation (domain properties, e-mail checks) and every place a key names a
record (archive, duplicate checks, association targets), so `https://www.Acme.de/about`
in a contacts file finds the company stored as `acme.de`.
"""

from __future__ import annotations

import polars as pl

# scheme, user info, a leading `www.`; then the host ends at a port, path, query or fragment
_DOMAIN_HEAD = r"^(?:[a-z][a-z0-9+.\-]*://)?(?:[^@/?#]*@)?(?:www\.)?"
_DOMAIN_TAIL = r"[:/?#].*$"

# what HubSpot accepts as an e-mail address: one @, a dotted domain, no spaces or commas
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^[^\s@,;<>()\[\]\\\"]+@{_LABEL}(?:\.{_LABEL})+$"


def clean_domain(e: pl.Expr) -> pl.Expr:
    """`https://www.Acme.de:443/about` -> `acme.de`: scheme, `www.`, port, path and case go."""
    return (e.str.strip_chars().str.to_lowercase()
            .str.replace(_DOMAIN_HEAD, "").str.replace(_DOMAIN_TAIL, "")
            .str.strip_chars_end("."))


def clean_key(prop: str, value: pl.Expr) -> pl.Expr:
    """A unique value as HubSpot matches it: a domain cleaned, anything else trimmed (case
    is left to the caller: unique values match ignoring it)."""
    return clean_domain(value) if prop == "domain" else value.str.strip_chars()
