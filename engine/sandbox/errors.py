"""HubSpot's error bodies: one exception that carries a status and a ready body.

```
ApiError(status, body)      rendered as is by the server
└── built by: validation_error, conflict, not_found, bad_request, unauthorized
```
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import orjson

from engine.sandbox.validate import InvalidValue


def correlation_id() -> str:
    return str(uuid.uuid4())


class ApiError(Exception):
    """An error answer: HTTP status and the JSON body HubSpot would send."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


def error_body(
    message: str,
    category: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    sub_category: str | None = None,
    context: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": correlation_id(),
        "category": category,
    }
    if sub_category is not None:
        body["subCategory"] = sub_category
    if errors is not None:
        body["errors"] = errors
    if context is not None:
        body["context"] = context
    return body


def batch_error(
    message: str,
    category: str,
    *,
    context: dict[str, list[str]] | None = None,
    errors: list[dict[str, Any]] | None = None,
    sub_category: str | None = None,
) -> dict[str, Any]:
    """One item of a 207's `errors` (the client's StandardError needs context/links/errors)."""
    item: dict[str, Any] = {
        "status": "error",
        "category": category,
        "message": message,
        "context": context or {},
        "errors": errors or [],
        "links": {},
    }
    if sub_category is not None:
        item["subCategory"] = sub_category
    return item


def invalid_values_message(problems: Iterable[InvalidValue]) -> str:
    items = [
        {"isValid": False, "message": p.message, "error": p.code, "name": p.name}
        for p in problems
    ]
    return "Property values were not valid: " + orjson.dumps(items).decode()


def invalid_values_details(problems: Iterable[InvalidValue]) -> list[dict[str, Any]]:
    return [
        {"message": p.message, "code": p.code, "context": {"propertyName": [p.name]}}
        for p in problems
    ]


def validation_error(problems: list[InvalidValue]) -> ApiError:
    return ApiError(
        400,
        error_body(
            invalid_values_message(problems),
            "VALIDATION_ERROR",
            errors=invalid_values_details(problems),
        ),
    )


def bad_request(message: str, *, context: dict[str, list[str]] | None = None) -> ApiError:
    return ApiError(400, error_body(message, "VALIDATION_ERROR", context=context))


def not_found(message: str = "Resource not found") -> ApiError:
    return ApiError(404, error_body(message, "OBJECT_NOT_FOUND"))


def conflict(message: str, existing_id: str | None = None) -> ApiError:
    context = {"id": [existing_id]} if existing_id is not None else None
    return ApiError(409, error_body(message, "CONFLICT", context=context))


def unauthorized() -> ApiError:
    message = (
        "Authentication credentials not found. This API supports OAuth 2.0 authentication "
        "and you can find more details at https://developers.hubspot.com/docs/methods/auth/"
        "oauth-overview"
    )
    return ApiError(401, error_body(message, "INVALID_AUTHENTICATION"))
