"""samples/airflow_nightly.py and samples/dagster_asset.py run as plain functions (no
Airflow, no Dagster installed) against a sandbox started from Python."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import polars as pl

SAMPLES = Path(__file__).parent.parent / "samples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_airflow_task_as_a_plain_function(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    (tmp_path / "c.csv").write_text("email,firstname\na@example.com,A\nb@example.com,B\n")
    counts = load("airflow_nightly").nightly_contacts(
        str(tmp_path / "c.csv"), str(tmp_path), sandbox.base_url, sandbox.token)
    assert counts == {"rows_read": 2, "created": 2, "updated": 0, "rejected": 0}
    assert len(sandbox.records("contacts")) == 2


def test_dagster_asset_as_a_plain_function(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    frame = pl.DataFrame({"domain": ["a.example.com", "b.example.com"], "name": ["A", "B"]})
    asset = load("dagster_asset").hubspot_companies
    first = asset(frame, str(tmp_path), sandbox.base_url, sandbox.token)
    again = asset(frame, str(tmp_path), sandbox.base_url, sandbox.token)
    assert first == again == {"rows_read": 2, "created": 2, "updated": 0, "rejected": 0}
    assert len(sandbox.records("companies")) == 2
