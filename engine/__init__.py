"""hsbulk: async, high-throughput batch import/export for the HubSpot CRM API.

The names in `__all__` are the public API (see README.md, "Python API"); everything else
is private to its module and may change.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # at run time the names load on first use (`__getattr__` below)
    from engine.api import (
        Connection,
        Counts,
        ExportResult,
        ImportOptions,
        RunResult,
        RunState,
        StepResult,
        export_objects,
        export_objects_sync,
        import_file,
        import_file_sync,
        import_frame,
        import_frame_sync,
        run_job,
        run_job_sync,
        start_sandbox,
    )
    from engine.errors import (
        ApiError,
        CheckpointError,
        ConfigError,
        EngineError,
        FatalApiError,
        QuotaExhausted,
        SourceError,
        Stopped,
    )
    from engine.interrupt import StopRequest
    from engine.job import Job, load_job
    from engine.normalize import NormalizeOptions
    from engine.report import Progress, ProgressView

# Where each public name lives. `import engine` stays cheap (`python -m engine` installs its
# signal handlers before anything heavy is imported); a name's module loads on first use.
_HOMES = {
    "ApiError": "engine.errors", "CheckpointError": "engine.errors",
    "ConfigError": "engine.errors", "EngineError": "engine.errors",
    "FatalApiError": "engine.errors", "QuotaExhausted": "engine.errors",
    "SourceError": "engine.errors", "Stopped": "engine.errors",
    "StopRequest": "engine.interrupt", "Job": "engine.job", "load_job": "engine.job",
    "NormalizeOptions": "engine.normalize", "Progress": "engine.report",
    "ProgressView": "engine.report",
}


def __getattr__(name: str) -> Any:
    if name not in __all__ or name == "__version__":
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_HOMES.get(name, "engine.api")), name)
    globals()[name] = value
    return value


__all__ = [
    "ApiError",
    "CheckpointError",
    "ConfigError",
    "Connection",
    "Counts",
    "EngineError",
    "ExportResult",
    "FatalApiError",
    "ImportOptions",
    "Job",
    "NormalizeOptions",
    "Progress",
    "ProgressView",
    "QuotaExhausted",
    "RunResult",
    "RunState",
    "SourceError",
    "StepResult",
    "StopRequest",
    "Stopped",
    "__version__",
    "export_objects",
    "export_objects_sync",
    "import_file",
    "import_file_sync",
    "import_frame",
    "import_frame_sync",
    "load_job",
    "run_job",
    "run_job_sync",
    "start_sandbox",
]
