"""Query parameters a route does not declare are refused (422), as unknown body fields are: a misspelt `cursor`
or `limit` would otherwise be ignored silently and answer a different page than the caller asked for."""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute


def _declared(dependant: Dependant) -> frozenset[str]:
    names = {field.alias for field in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _declared(dependency)
    return frozenset(names)


_DECLARED: dict[int, frozenset[str]] = {}  # by id(route): routes live as long as the app


def _declared_by(route: APIRoute) -> frozenset[str]:
    names = _DECLARED.get(id(route))
    if names is None:
        names = _DECLARED[id(route)] = _declared(route.dependant)
    return names


def refuse_unknown_query(request: Request) -> None:
    """A router dependency; POST /payments, which skips dependency injection, calls it itself."""
    if not request.scope.get("query_string"):
        return
    route = request.scope.get("route")
    declared = _declared_by(route) if isinstance(route, APIRoute) else frozenset()
    unknown = sorted({name for name in request.query_params if name not in declared})
    if unknown:
        raise RequestValidationError(
            [
                {"type": "extra_forbidden", "loc": ("query", name), "msg": "unknown query parameter", "input": None}
                for name in unknown
            ]
        )
