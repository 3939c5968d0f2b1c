"""Export: the scheduler that reads one object type (and its associations) into part files.

Two read budgets are used at once (ARCHITECTURE.md, "Export"): the list endpoint (one
sequential cursor inside the 10-second window) and search (its own ~5/s limit, any
`hs_object_id` range). The units, each in its own module:

* `plan`: the id ranges and the planner that cuts pieces for idle search readers;
* `readers`: the list cursor and the search readers;
* `parts`: columns, pages decoded into typed frames, the part writer;
* `edges`: association edges, read ahead and written as edge tables;
* `manifest`: the output folder (part numbers, orphans) and `_manifest.json`;
* `spec`: what to export and the account of a run;
* `runner`: `run_export`, the wiring of the above.
"""

from engine.exports.runner import run_export
from engine.exports.spec import ExportSpec, ExportSummary, write_export_summary

__all__ = ["ExportSpec", "ExportSummary", "run_export", "write_export_summary"]
