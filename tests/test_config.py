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
        ("  https://api.hubapi.com.\n", "https://api.hubapi.com."),
        ("https://xn--bcher-kva.example/v", "https://xn--bcher-kva.example/v"),
        ("https://10.1.2.3:65535", "https://10.1.2.3:65535"),
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
        ("https://api.hubapi.com:0", "port '0'"),
        ("https://api.hubapi.com:", "port ''"),
        ("http://127.0.0.1:+80", "port '\\+80'"),
        ("https://api .hubapi.com", "a space at position 12"),
        ("http://127.0.0.1 :8080", "a space at position 17"),
        ("https://api.hub\x00api.com", "control character"),
        ("https://api.hubapi.com/a\nb", "control character"),
        ("https://bücher.example", "xn--"),
        ("https://a..b", "not a valid host"),
        ("https://-api.hubapi.com", "not a valid host"),
        ("https://api_x.hubapi.com", "not a valid host"),
        ("https://1.2.3", "not a valid host"),
        ("http://[::1%25eth0]:80", "not a valid host"),
        ("https://[::1", "not a valid URL"),
        ("https://api.hubapi.com?", "query or fragment"),
        ("https://api.hubapi.com/#", "query or fragment"),
        ("https://api.hubapi.com/%zz", "two hex digits"),
    ],
)
def test_refused_base_urls(url, reason):
    with pytest.raises(ConfigError, match=reason):
        check_base_url(url)


def test_a_password_in_a_base_url_is_never_echoed():
    with pytest.raises(ConfigError, match="user information") as info:
        check_base_url("https://me:hunter22@api.hubapi.com")
    assert "hunter22" not in str(info.value)


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


@pytest.mark.parametrize("content", [b"pat-na1-x\n", b"pat-na1-x\r\n", b"pat-na1-x"])
def test_a_token_file_loses_one_trailing_newline(tmp_path: Path, content):
    path = tmp_path / "token"
    path.write_bytes(content)
    path.chmod(0o600)
    assert load_token(path, {}).reveal() == "pat-na1-x"


@pytest.mark.parametrize(("content", "reason"), [
    (b"pat-na1-x\n\n", "line break"), (b" pat-na1-x", "a space"), (b"\n", "empty"),
    (b"pat-na1-\x7f", "control character"), (b"pat-\xc3\xa9", "non-ASCII"),
    (b"\xff", "UTF-8"),
])
def test_a_token_file_holds_one_line_of_printable_ascii(tmp_path: Path, content, reason):
    path = tmp_path / "token"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=reason):
        load_token(path, {})


def test_a_token_file_must_be_a_regular_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="not a regular file"):
        load_token(tmp_path, {})
    with pytest.raises(ConfigError, match="No such file"):
        load_token(tmp_path / "missing", {})


def test_client_settings_refuse_a_token_that_cannot_be_a_header():
    with pytest.raises(ConfigError, match="line break") as info:
        ClientSettings("https://api.hubapi.com", Secret("pat-na1-x\r\nX-Evil: 1"))
    assert "pat-na1-x" not in str(info.value)


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


def test_one_concurrency_default_for_the_library_and_the_cli():
    from engine.cli import build_parser
    from engine.config import DEFAULT_CONCURRENCY

    settings = ClientSettings("https://api.hubapi.com", Secret("pat-x"))
    cli = build_parser().parse_args(["import", "in.csv", "--object", "contacts"])
    assert settings.concurrency == cli.concurrency == DEFAULT_CONCURRENCY == 8


def test_library_settings_errors_name_the_setting_not_a_cli_flag():
    from engine.normalize import NormalizeOptions

    token = Secret("pat-x")
    failures = {
        "concurrency must be at least 1": lambda: ClientSettings(
            "https://api.hubapi.com", token, concurrency=0),
        "daily_reserve must not be negative": lambda: ClientSettings(
            "https://api.hubapi.com", token, daily_reserve=-1),
        "timezone 'Mars/Olympus' is not an IANA": lambda: NormalizeOptions(
            timezone="Mars/Olympus"),
        "date_order must be one of": lambda: NormalizeOptions(date_order="YDM"),  # type: ignore[arg-type]
        "separators must name": lambda: NormalizeOptions(separators=""),
    }
    for message, make in failures.items():
        with pytest.raises(ConfigError) as info:
            make()
        assert str(info.value).startswith(message) and "--" not in str(info.value)


def test_durations_and_rate_windows_share_one_unit_table():
    from engine.config import DURATION_UNITS, parse_duration_s

    assert parse_duration_s("10m") == 600 == Rate.parse("600/10m").window_s
    assert parse_duration_s("500ms") == 0.5 and parse_duration_s("2h") == 7200
    assert parse_duration_s("1d") == DURATION_UNITS["d"] == 86_400
    with pytest.raises(ConfigError, match="lookback '10 parsecs' is not a duration"):
        parse_duration_s("10 parsecs", "lookback")
