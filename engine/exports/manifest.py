"""The output folder of an export: part numbering, orphans, and `_manifest.json`.

Exporting into a folder again. Part numbers go on from the highest part already in the
object's and edge tables' folders, so no run ever overwrites another's file.

* An incremental export (`since`) adds its parts beside the earlier ones and keeps them
  all: the folder is the first export plus every change since, in part order. A record
  changed since an earlier run appears again in a later part: a warehouse keeps, per
  `id`, the row of the highest part number (every part of a run is numbered after every
  part of the runs before it). The manifest lists every part file in the folder (`files`,
  each with its rows and the `watermark` of the run that wrote it), `records`/`edges`
  count the rows of all of them, `runs` lists each run (watermark, since, first part,
  rows), and `watermark` is the latest run's, for the next incremental export.
* A full export is a new snapshot: once its manifest is written, the earlier parts of its
  datasets are deleted and the manifest lists its own files (and any other dataset's files
  an earlier manifest listed that are still there).

Until an export finishes, the folder's earlier manifest stays as it was (it still describes
the files it lists); a crash deletes only this run's unjournaled parts and temp files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from engine import __version__
from engine.exports.parts import Column, count_rows, modified_property
from engine.exports.spec import ExportSpec
from engine.journal import ExportJournal, ExportPart
from engine.outputs import write_json
from engine.schema import ObjectType, canonical_object

MANIFEST = "_manifest.json"
_PART = re.compile(r"^part-(\d{5,})\.(?:parquet|csv)$")
FileEntry = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ExportFolder:
    """The output folder and the datasets (record table first, then edge tables) that
    one export writes into it."""

    out_dir: Path
    records: str
    edges: tuple[str, ...]

    @property
    def datasets(self) -> list[str]:
        return [self.records, *self.edges]

    def part_files(self) -> list[tuple[str, int]]:
        """(path relative to the output folder, part number) of every part file on disk in
        this export's dataset folders, earlier exports' included."""
        found = []
        for dataset in self.datasets:
            folder = self.out_dir / dataset
            if folder.is_dir():
                found += [(f"{dataset}/{item.name}", int(match.group(1)))
                          for item in folder.iterdir() if (match := _PART.match(item.name))]
        return sorted(found)

    def first_free_part(self) -> int:
        """The number after every part already in the folder."""
        return max((number for _, number in self.part_files()), default=0) + 1

    def remove_orphans(self, first_part: int, known: set[str]) -> None:
        """Delete temp files, and this export's part files (numbered from `first_part`)
        that the journal does not know (a crash between a rename and its commit); never an
        earlier export's parts."""
        for dataset in self.datasets:
            folder = self.out_dir / dataset
            if folder.is_dir():
                for item in folder.iterdir():
                    if item.name.startswith(".part-") and ".tmp" in item.name:
                        item.unlink(missing_ok=True)
        for relative, number in self.part_files():
            if number >= first_part and relative not in known:
                (self.out_dir / relative).unlink(missing_ok=True)

    def remove_replaced(self, first_part: int) -> None:
        """A full export replaces the earlier parts of its datasets: deleted once the new
        manifest (which no longer lists them) is in place."""
        for relative, number in self.part_files():
            if number < first_part:
                (self.out_dir / relative).unlink(missing_ok=True)

    def earlier_manifest(self) -> dict[str, Any]:
        """The manifest an earlier export left in the folder ({} if none or unreadable)."""
        try:
            earlier = orjson.loads((self.out_dir / MANIFEST).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        return earlier if isinstance(earlier, dict) else {}

    def kept_files(self, earlier: dict[str, Any], first_part: int, incremental: bool
                   ) -> list[FileEntry]:
        """The earlier exports' files that stay in the folder after this one.

        An incremental export keeps every earlier part of its datasets (numbered before its
        own); a full export replaces them. Files of other datasets that the earlier
        manifest lists and that are still there stay listed.
        """
        listed = {str(f.get("path")): f for f in earlier.get("files") or ()
                  if isinstance(f, dict) and f.get("path")}
        ours = set(self.datasets)
        kept = [f for path, f in listed.items()
                if f.get("dataset") not in ours and (self.out_dir / path).is_file()]
        if incremental:
            kept += [listed.get(relative) or {
                "dataset": relative.split("/")[0], "path": relative,
                "rows": count_rows(self.out_dir / relative)}
                for relative, number in self.part_files() if number < first_part]
        return kept


def claim_first_part(journal: ExportJournal, folder: ExportFolder) -> int:
    """This export's first part number (journaled, so a resumed export knows its own
    parts), after deleting temp files and this export's unjournaled parts."""
    journaled = journal.parts()
    first = journal.get("first_part")
    if first is None:
        first = str(min((p.part for p in journaled), default=folder.first_free_part()))
        journal.keep_first_part(int(first))
    folder.remove_orphans(int(first), {p.path for p in journaled if p.path})
    return int(first)


def manifest_header(spec: ExportSpec, obj: ObjectType, columns: Sequence[Column]
                    ) -> dict[str, Any]:
    """What the manifest says of the export itself (object, format, columns, ...)."""
    return {
        "object": str(obj), "object_type_id": obj.type_id,
        "format": spec.format, "hsbulk": __version__,
        "columns": {"id": "id", **{c.name: c.kind for c in columns}},
        "properties": [c.name for c in columns],
        "associations": [str(canonical_object(t)) for t in spec.associations],
        "archived": spec.archived, "lookback_s": spec.lookback.total_seconds(),
        "modified_property": modified_property(obj),
        "csv_formulas_escaped": spec.format == "csv" and spec.escape_formulas}


@dataclass(frozen=True, slots=True)
class ExportRun:
    """What one finished export adds to the manifest."""

    watermark: str
    since: str | None
    first_part: int
    parts: Sequence[ExportPart]  # every part this export journaled
    max_modified: str | None  # the latest last-modified value among its records

    def rows(self, dataset: str) -> int:
        return sum(p.rows for p in self.parts if p.dataset == dataset)


def _rows(files: Sequence[FileEntry], dataset: str) -> int:
    return sum(int(f.get("rows") or 0) for f in files if f.get("dataset") == dataset)


def _runs(folder: ExportFolder, earlier: dict[str, Any], run: ExportRun,
          targets: dict[str, str]) -> list[dict[str, Any]]:
    """Every run the folder holds: the earlier ones (incremental only) and this one."""
    incremental = run.since is not None
    runs = [r for r in earlier.get("runs") or () if isinstance(r, dict)
            and r.get("watermark") != run.watermark] if incremental else []
    if incremental and not runs and earlier.get("watermark"):
        runs.append({"watermark": earlier["watermark"], "since": earlier.get("since"),
                     "records": earlier.get("records")})
    runs.append({
        "watermark": run.watermark, "since": run.since, "full": not incremental,
        "first_part": run.first_part, "records": run.rows(folder.records),
        "edges": {name: run.rows(dataset) for name, dataset in targets.items()}})
    return runs


def write_manifest(folder: ExportFolder, header: dict[str, Any], run: ExportRun,
                   targets: dict[str, str]) -> None:
    """`_manifest.json`: what the folder holds after this export (see the module
    docstring). `header` describes the export (object, format, columns, ...); `targets`
    maps each association target to its edge dataset."""
    earlier = folder.earlier_manifest()
    incremental = run.since is not None
    this_run = [{"dataset": p.dataset, "path": p.path, "rows": p.rows,
                 "watermark": run.watermark} for p in run.parts if p.path]
    files = sorted(folder.kept_files(earlier, run.first_part, incremental) + this_run,
                   key=lambda f: (str(f.get("dataset")), str(f.get("path"))))
    modified = [run.max_modified] if run.max_modified else []
    if incremental and earlier.get("max_modified_seen"):
        modified.append(str(earlier["max_modified_seen"]))
    write_json(folder.out_dir / MANIFEST, {
        **header, "since": run.since, "watermark": run.watermark,
        "max_modified_seen": max(modified, default=None),
        "records": _rows(files, folder.records),
        "edges": {name: _rows(files, dataset) for name, dataset in targets.items()},
        "runs": _runs(folder, earlier, run, targets), "files": files,
    })
    if not incremental:
        folder.remove_replaced(run.first_part)
