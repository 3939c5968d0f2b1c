"""The exception tree of hsbulk, grouped by what the caller should do.

::

    EngineError
    ├── ConfigError            bad flags / mapping / job file; exit 2, never retried
    ├── SourceError            unreadable or malformed input file (row, column, byte offset)
    ├── TransportError         mapped from aiohttp at one boundary (client.py)
    │   ├── ConnectError
    │   └── RequestTimeout
    ├── ApiError(status, category, message, correlation_id)
    │   ├── RetryableApiError(retry_after_s)    429, 423, 477, 502-504, 521+
    │   └── FatalApiError                       401/403, schema errors
    ├── Stopped(result)        stopped before the end (interrupt, cancellation, quota):
    │   │                      the journal is consistent; run it again to resume; exit 4
    │   └── QuotaExhausted     the daily limit (or the reserve kept for others) is reached
    └── CheckpointError        spec or input changed since the checkpoint

What the caller should do, by branch: `ConfigError`, `SourceError`, `CheckpointError`: fix
the call or the input (retrying changes nothing); `FatalApiError`: fix the token or its
scopes; `Stopped`: run the same call again later (it resumes). A rejected row is data (a
rejects row with a code), never an exception.

No message built here ever contains an access token: callers pass only what HubSpot
sent back (which never echoes the Authorization header) or text of their own.
"""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Base of every error hsbulk raises on purpose."""

    exit_code = 3


class ConfigError(EngineError):
    """Bad flags, mapping or job file: fix the command and run it again."""

    exit_code = 2


class SourceError(EngineError):
    """The input file cannot be read as promised; names where and why."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        row: int | None = None,
        column: str | None = None,
        byte_offset: int | None = None,
    ) -> None:
        where = [
            part
            for part in (
                path,
                f"row {row}" if row is not None else None,
                f"column {column!r}" if column is not None else None,
                f"byte {byte_offset}" if byte_offset is not None else None,
            )
            if part
        ]
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.path = path
        self.row = row
        self.column = column
        self.byte_offset = byte_offset


class TransportError(EngineError):
    """The request did not get an HTTP answer (mapped from aiohttp in client.py)."""


class ConnectError(TransportError):
    """Connection refused, reset or dropped before a response arrived."""


class RequestTimeout(TransportError):
    """No response within the configured timeout."""


class ApiError(EngineError):
    """HubSpot answered with an error status; carries HubSpot's own fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        category: str | None = None,
        correlation_id: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        policy: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"HTTP {status} {category or 'ERROR'}: {message}")
        self.status = status
        self.message = message
        self.category = category
        self.correlation_id = correlation_id
        self.errors = errors or []
        self.policy = policy
        self.body = body or {}
        self.ambiguous = False  # set by the client: an earlier attempt may have landed


class RetryableApiError(ApiError):
    """A transient refusal (429, 423, 477, 5xx); worth retrying after `retry_after_s`."""

    def __init__(self, status: int, message: str, *, retry_after_s: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(status, message, **kwargs)
        self.retry_after_s = retry_after_s


class FatalApiError(ApiError):
    """Authentication, scopes or schema trouble: the run cannot go on."""


class Stopped(EngineError):
    """The run stopped before its end and can be resumed by running it again.

    `result` is the account of what was done (the API's typed result), when there is one.
    """

    exit_code = 4
    resumable = True

    def __init__(self, message: str, *, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class QuotaExhausted(Stopped):
    """The daily quota (or the configured reserve) is reached: save and exit 4."""


class CheckpointError(EngineError):
    """The checkpoint does not belong to this job or input."""

    exit_code = 2


def first_error(group: BaseExceptionGroup[BaseException]) -> Exception | None:
    """The error that matters in a task group's failure: an EngineError first."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        item = pending.pop(0)
        if isinstance(item, BaseExceptionGroup):
            pending.extend(item.exceptions)
        else:
            leaves.append(item)
    for leaf in leaves:
        if isinstance(leaf, EngineError):
            return leaf
    return next((leaf for leaf in leaves if isinstance(leaf, Exception)), None)
