"""Frozen settings parsed from CLI flags and job files. Pure: no network, no event loop."""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.errors import ConfigError

DEFAULT_BASE_URL = "https://api.hubapi.com"
TOKEN_ENV = "HUBSPOT_ACCESS_TOKEN"
BASE_URL_ENV = "HUBSPOT_BASE_URL"

DEFAULT_CONCURRENCY = 8  # requests in flight at once
# Seconds per unit of a duration or a rate window; a bare number is seconds.
DURATION_UNITS: dict[str | None, float] = {
    "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|min)?\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")


def parse_duration_s(text: str, what: str = "duration") -> float:
    """`10m`, `30s`, `2h`, `1d`, `500ms` (a bare number is seconds) -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{what} {text!r} is not a duration such as 10m, 30s or 2h")
    return float(match.group(1)) * DURATION_UNITS[match.group(2)]


@dataclass(frozen=True, slots=True)
class Rate:
    """`requests` calls in any `window_s`-second interval."""

    requests: int
    window_s: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Read `190/10s`, `5/s`, `100/2s`, `600/1m`."""
        match = _RATE.match(text)
        if not match:
            raise ConfigError(f"rate {text!r} is not of the form N/Ws, e.g. 190/10s or 5/s")
        count, size, unit = match.groups()
        requests = float(count)
        window_s = float(size or 1) * DURATION_UNITS[unit]
        if requests < 1 or requests != int(requests) or window_s <= 0:
            raise ConfigError(f"rate {text!r} needs a whole number of requests >= 1 "
                              "and a positive window")
        return cls(int(requests), window_s)

    @classmethod
    def parse_option(cls, text: str) -> Rate | None:
        """A `--rate` value: `N/Ws`, or `none`/`unlimited` for no client-side limit."""
        if text.strip().lower() in {"none", "unlimited", "off"}:
            return None
        return cls.parse(text)

    @property
    def per_s(self) -> float:
        return self.requests / self.window_s

    def __str__(self) -> str:
        return f"{self.requests}/{self.window_s:g}s"


DEFAULT_RATE = Rate(100, 10.0)  # safe for every HubSpot tier (Pro/Enterprise: 190/10s)
DEFAULT_SEARCH_RATE = Rate(5, 1.0)  # HubSpot's search limit per account


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Full-jitter exponential backoff under a retry budget.

    The budget lets retries be at most `budget_ratio` of first attempts plus
    `budget_min` (a token bucket in the style of gRPC/Finagle), so an outage
    cannot multiply traffic.
    """

    max_attempts: int = 8
    base_s: float = 0.5
    cap_s: float = 20.0
    budget_ratio: float = 0.2
    budget_min: int = 20
    retry_after_cap_s: float = 120.0


class Secret:
    """An access token that never shows itself in a repr, str, log or traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Everything the HTTP client needs for one run."""

    base_url: str
    token: Secret
    rate: Rate | None = DEFAULT_RATE  # None: no client-side limit (local benchmarks)
    search_rate: Rate | None = DEFAULT_SEARCH_RATE
    concurrency: int = DEFAULT_CONCURRENCY
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    daily_reserve: int = 0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        if self.daily_reserve < 0:
            raise ConfigError("daily_reserve must not be negative")
        check_token(self.token.reveal(), "the access token")


def is_loopback_host(host: str) -> bool:
    if host.lower() in {"localhost", "localhost."}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_PORT = re.compile(r"\d{1,5}")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_USERINFO = re.compile(r"//[^/]*@")


def check_base_url(url: str) -> str:
    """Return `url` without a trailing slash, or refuse it with a clear `ConfigError`.

    A well-formed http(s) URL: printable ASCII, a valid host name or IP address, a port in
    1-65535 if any; https anywhere, plain http only to loopback; no userinfo, query or
    fragment. Refused at once: a bad URL would otherwise fail only after every retry.
    """
    text = url.strip()
    shown = repr(_USERINFO.sub("//***@", text))  # a password in the URL is never echoed
    bad = _first_unprintable(text)
    if bad is not None:
        hint = " (write an international host name in its xn-- form)" if (
            text[bad] > "~" and text[bad].isprintable()) else ""
        raise ConfigError(f"base URL {shown} has {_kind(text[bad])} at position {bad + 1}"
                          f"{hint}")
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise ConfigError(f"base URL {shown} is not a valid URL: {exc}") from None
    if parts.scheme not in {"http", "https"}:
        raise ConfigError(f"base URL {shown} must use https (or http to loopback), "
                          f"not {parts.scheme or 'no scheme'!r}")
    if "@" in parts.netloc:
        raise ConfigError(f"base URL {shown} must not carry user information (the '@' part)")
    if "?" in text or "#" in text:
        raise ConfigError(f"base URL {shown} must not have a query or fragment")
    host, port = _split_netloc(parts.netloc, shown)
    if not host:
        raise ConfigError(f"base URL {shown} has no host")
    _check_host(host, shown)
    if port is not None and not (_PORT.fullmatch(port) and 1 <= int(port) <= 65535):
        raise ConfigError(f"base URL {shown} is not a valid URL: port {port!r} is not "
                          "a number from 1 to 65535")
    if _BAD_ESCAPE.search(parts.path):
        raise ConfigError(f"base URL {shown} is not a valid URL: '%' in its path is not "
                          "followed by two hex digits")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ConfigError(f"base URL {shown}: plain http is allowed only to loopback "
                          "(127.0.0.0/8, ::1, localhost); use https")
    return text.rstrip("/")


def _first_unprintable(text: str) -> int | None:
    """The index of the first character outside printable ASCII (space excluded)."""
    for index, char in enumerate(text):
        if not "!" <= char <= "~":
            return index
    return None


def _kind(char: str) -> str:
    if char == " ":
        return "a space"
    if char.isprintable():
        return "a non-ASCII character"
    return "a line break, tab or other control character"


def _split_netloc(netloc: str, shown: str) -> tuple[str, str | None]:
    """`host[:port]` or `[v6][:port]` -> (host, port text or None when there is no ':')."""
    if netloc.startswith("["):
        host, bracket, rest = netloc[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(f"base URL {shown} is not a valid URL: bad [IPv6] host")
        return host, rest[1:] if rest else None
    host, colon, port = netloc.partition(":")
    return host, port if colon else None


def _check_host(host: str, shown: str) -> None:
    """An IP address (IPv6 without a zone) or a DNS name of valid labels."""
    try:
        ipaddress.ip_address(host)
        if "%" not in host:
            return
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if (len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels)
            or labels[-1].isdigit()):
        raise ConfigError(f"base URL {shown} is not a valid URL: {host!r} is not a valid "
                          "host name or IP address")


def load_toml(path: Path, what: str) -> dict[str, Any]:
    """The tables of a TOML file; a `ConfigError` naming `what` ("job file") if unreadable."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None


def resolve_base_url(flag: str | None, environ: Mapping[str, str] = os.environ) -> str:
    return check_base_url(flag or environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL)


def load_token(token_file: Path | None, environ: Mapping[str, str] = os.environ) -> Secret:
    """The access token from `--token-file` (a private regular file) or `HUBSPOT_ACCESS_TOKEN`.

    A file loses one trailing newline; the environment value loses surrounding blanks.
    What is left must be non-empty printable ASCII without blanks. No message shows it.
    """
    if token_file is not None:
        value = _read_token_file(token_file)
        check_token(value, f"the token in {token_file}")
        return Secret(value)
    value = environ.get(TOKEN_ENV, "").strip()
    if not value:
        raise ConfigError(f"no access token: set {TOKEN_ENV} or give a token file")
    check_token(value, f"${TOKEN_ENV}")
    return Secret(value)


def _read_token_file(path: Path) -> str:
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"token file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"token file {path} is not a regular file")
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise ConfigError(f"token file {path} is readable by others "
                          f"(mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 it")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"token file {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"token file {path} is not UTF-8 text") from None
    return text.removesuffix("\n").removesuffix("\r")


def check_token(value: str, what: str) -> None:
    """Refuse an empty token or one with a blank, control or non-ASCII character."""
    if not value:
        raise ConfigError(f"{what} is empty")
    bad = _first_unprintable(value)
    if bad is not None:
        raise ConfigError(f"{what} has {_kind(value[bad])} at position {bad + 1}; a token "
                          "is one line of printable ASCII")
