"""Cleaning of messy values that HubSpot compares as text: company domains, e-mails.

Shared by normalisation (domain properties, e-mail checks) and association key lookups,
so `https://www.Acme.de/about` in a contacts file finds the company stored as `acme.de`.
"""

from __future__ import annotations

import re

import polars as pl

# scheme, user info, a leading `www.`; then the host ends at a port, path, query or fragment
_DOMAIN_HEAD = r"^(?:[a-z][a-z0-9+.\-]*://)?(?:[^@/?#]*@)?(?:www\.)?"
_DOMAIN_TAIL = r"[:/?#].*$"
_DOMAIN_HEAD_RE = re.compile(_DOMAIN_HEAD)
_DOMAIN_TAIL_RE = re.compile(_DOMAIN_TAIL)

# what HubSpot accepts as an e-mail address: one @, a dotted domain, no spaces or commas
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^[^\s@,;<>()\[\]\\\"]+@{_LABEL}(?:\.{_LABEL})+$"
_EMAIL_RE = re.compile(EMAIL_PATTERN)


def clean_domain(e: pl.Expr) -> pl.Expr:
    """`https://www.Acme.de:443/about` -> `acme.de`: scheme, `www.`, port, path and case go."""
    return (e.str.strip_chars().str.to_lowercase()
            .str.replace(_DOMAIN_HEAD, "").str.replace(_DOMAIN_TAIL, "")
            .str.strip_chars_end("."))


def clean_domain_text(text: str) -> str:
    """`clean_domain` for one Python string."""
    text = _DOMAIN_HEAD_RE.sub("", text.strip().lower(), count=1)
    return _DOMAIN_TAIL_RE.sub("", text, count=1).rstrip(".")


def is_email(text: str) -> bool:
    return _EMAIL_RE.match(text) is not None
