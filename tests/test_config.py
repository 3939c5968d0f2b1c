import os
from pathlib import Path

import pytest

from engine.config import ClientSettings, Rate, Secret, check_base_url, load_token, resolve_base_url
from engine.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.hubapi.com", "https://api.hubapi.com"),
        ("https://api.hubapi.com/", "https://api.hubapi.com"),
        ("https://staging.example.com:8443/hub", "https://staging.example.com:8443/hub"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.5.6.7:1", "http://127.5.6.7:1"),
        ("http://localhost:9000/", "http://localhost:9000"),
        ("http://[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_accepted_base_urls(url, expected):
    assert check_base_url(url) == expected


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://api.hubapi.com@evil.test", "user information"),
        ("https://user:pw@api.hubapi.com", "user information"),
        ("http://api.hubapi.com", "only to loopback"),
        ("http://10.0.0.1:8080", "only to loopback"),
        ("http://127.0.0.1.evil.test", "only to loopback"),
        ("ftp://api.hubapi.com", "must use https"),
        ("file:///etc/passwd", "must use https"),
        ("api.hubapi.com", "must use https"),
        ("https://", "no host"),
        ("https://api.hubapi.com/?x=1", "query or fragment"),
        ("https://api.hubapi.com:99999", "not a valid URL"),
    ],
)
def test_refused_base_urls(url, reason):
    with pytest.raises(ConfigError, match=reason):
        check_base_url(url)


def test_base_url_from_environment_then_default():
    assert resolve_base_url(None, {}) == "https://api.hubapi.com"
    assert resolve_base_url(None, {"HUBSPOT_BASE_URL": "http://127.0.0.1:1"}) == "http://127.0.0.1:1"
    assert resolve_base_url("http://localhost:2", {"HUBSPOT_BASE_URL": "x"}) == "http://localhost:2"


@pytest.mark.parametrize(
    ("text", "requests", "window_s"),
    [("190/10s", 190, 10.0), ("5/s", 5, 1.0), ("100/2s", 100, 2.0), ("600/1m", 600, 60.0),
     ("50/500ms", 50, 0.5)],
)
def test_rate_parsing(text, requests, window_s):
    assert Rate.parse(text) == Rate(requests, window_s)


@pytest.mark.parametrize("text", ["", "fast", "0/10s", "1.5/s", "10/0s", "-1/s"])
def test_bad_rates_are_config_errors(text):
    with pytest.raises(ConfigError, match="rate"):
        Rate.parse(text)


def test_rate_none_means_unlimited():
    assert Rate.parse_option("none") is None
    assert Rate.parse_option("190/10s") == Rate(190, 10.0)


def test_token_file_must_be_private(tmp_path: Path):
    path = tmp_path / "token"
    path.write_text("pat-na1-secret\n")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600") as info:
        load_token(path, {})
    assert "pat-na1-secret" not in str(info.value)
    os.chmod(path, 0o600)
    assert load_token(path, {}).reveal() == "pat-na1-secret"


def test_token_from_environment_and_missing():
    assert load_token(None, {"HUBSPOT_ACCESS_TOKEN": " pat-x "}).reveal() == "pat-x"
    with pytest.raises(ConfigError, match="HUBSPOT_ACCESS_TOKEN"):
        load_token(None, {})


def test_secret_never_shows_itself():
    secret = Secret("pat-na1-11111111-2222-3333-4444-555555555555")
    settings = ClientSettings("https://api.hubapi.com", secret)
    for text in (repr(secret), str(secret), repr(settings), f"{settings}"):
        assert "pat-na1" not in text
        assert "55555555" not in text
