"""A nightly import as an Airflow task: a plain function, decorated only where Airflow is.

The task imports a file (or a polars frame) with the documented API. A stop (daily quota,
the task cancelled by Airflow's SIGTERM) raises `engine.Stopped`, so Airflow marks the try
failed and retries it: the retry resumes from the journal, nothing lost or duplicated.
"""

from __future__ import annotations

from pathlib import Path

import engine


def nightly_contacts(source: str, journal_dir: str, base_url: str | None = None,
                     token: str | None = None) -> dict[str, int]:
    """Import SOURCE into contacts (upsert by email); returns counts for XCom."""
    folder = Path(journal_dir)
    result = engine.import_file_sync(
        source, "contacts", engine.ImportOptions(id_property="email"),
        connection=engine.Connection(base_url, token, rate="100/10s"),
        checkpoint=folder / "contacts.db", rejects=folder / "contacts.rejects.csv")
    counts = result.counts
    return {"rows_read": counts.rows_read, "created": counts.created,
            "updated": counts.updated, "rejected": counts.rejected}


try:  # the orchestrator's decorator, only where Airflow is installed
    from airflow.decorators import task
except ImportError:
    pass
else:
    nightly_contacts_task = task(retries=3)(nightly_contacts)
