"""A Dagster asset that loads a polars frame into HubSpot: a plain function, decorated
only where Dagster is installed. `run_key` names the journal: a re-materialisation of the
same frame resumes an unfinished load, or answers from the journal once it finished."""

from __future__ import annotations

from pathlib import Path

import polars as pl

import engine


def hubspot_companies(frame: pl.DataFrame, journal_dir: str, base_url: str | None = None,
                      token: str | None = None) -> dict[str, int]:
    """Upsert FRAME into companies by domain; returns counts as asset metadata."""
    result = engine.import_frame_sync(
        frame, "companies", engine.ImportOptions(id_property="domain"),
        run_key="companies", connection=engine.Connection(base_url, token),
        checkpoint=Path(journal_dir) / "companies.db")
    return {"rows_read": result.counts.rows_read, "created": result.counts.created,
            "updated": result.counts.updated, "rejected": result.counts.rejected}


try:  # the orchestrator's decorator, only where Dagster is installed
    import dagster
except ImportError:
    pass
else:
    hubspot_companies_asset = dagster.asset(hubspot_companies)
