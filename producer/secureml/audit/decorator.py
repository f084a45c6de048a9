"""audit_function: every call of a function becomes an audit trail of its own."""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar, cast

from secureml.audit import events as ev
from secureml.audit.exceptions import AuditError
from secureml.audit.trail import INFO, AuditTrail

F = TypeVar("F", bound=Callable[..., Any])
RETURN = "return"  # name to put in record_values to record the return value itself


def describe(value: Any) -> dict[str, Any]:
    """Type and size of a value, never the value: what an audit may keep about arbitrary data.

    Never raises: a value whose ``shape`` or ``len()`` fails is described as such (the call it
    belongs to goes ahead either way).
    """
    kind = type(value)
    described: dict[str, Any] = {
        "type": kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    }
    try:
        shape = getattr(value, "shape", None)
        if isinstance(shape, tuple) and all(isinstance(d, int) for d in shape):
            described["shape"] = list(shape)
        else:
            with contextlib.suppress(TypeError):
                size = len(value)
                if isinstance(size, int):
                    described["size"] = size
    except Exception as exc:  # noqa: BLE001 - a user type's shape or __len__ may raise anything
        described["undescribed"] = f"{type(exc).__name__} while reading its shape or size"
    return described


def _recorded(value: Any, field: str) -> dict[str, Any]:
    """``{"value": value}`` when the value can be recorded as JSON, else why it was not."""
    try:
        text = ev.json_value(value, field, "audit_function")
    except ev.AuditValidationError as exc:
        return {"unrecorded": exc.rule}
    except Exception as exc:  # noqa: BLE001 - a default= conversion of a user type may raise anything
        return {"unrecorded": f"{type(exc).__name__} while converting it to JSON"}
    if len(text) > ev.MAX_EVENT_BYTES // 4:  # the event must stay within its limit whatever the function got
        return {"unrecorded": f"{len(text):,} characters as JSON, too large to record (limit "
                              f"{ev.MAX_EVENT_BYTES // 4:,})"}
    return {"value": value}


def audit_function(
    operation_name: str | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    regulations: Sequence[str] | None = None,
    *,
    record_values: Collection[str] = (),
    context: dict[str, Any] | None = None,
    user: str | None = None,
    log_level: int | str = INFO,
    bootstrap_servers: str | None = None,
    topic: str | None = None,
    privacy: Any = None,
) -> Callable[[F], F]:
    """Decorator: each call opens a trail, logs the call, then the return or the exception, and closes.

    Arguments are recorded by name with their type and size only; the values of the argument
    names listed in ``record_values`` (and the return value, with ``"return"``) are recorded too.
    Exceptions are re-raised unchanged (their messages are stored redacted, see ``privacy`` of
    AuditTrail). Works on plain and ``async def`` functions.
    """
    allowed = frozenset(record_values)

    def decorator(func: F) -> F:
        import inspect  # only when decorating: importing it costs a model server ~10 ms at start

        signature = inspect.signature(func)
        unknown = allowed - set(signature.parameters) - {RETURN}
        if unknown:
            raise ev.AuditValidationError(
                "record_values", f"names no parameter of {func.__qualname__}: {sorted(unknown)}", where="audit_function"
            )
        name = operation_name or func.__name__

        def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[AuditTrail, float]:
            trail = AuditTrail(
                name, log_dir=log_dir, log_level=log_level, context=context, regulations=regulations,
                user=user, bootstrap_servers=bootstrap_servers, topic=topic, privacy=privacy,
            )
            try:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
            except TypeError:
                bound = None  # the call itself will raise the right TypeError
            arguments = {} if bound is None else {
                arg: {**describe(value), **(_recorded(value, arg) if arg in allowed else {})}
                for arg, value in bound.arguments.items()
            }
            call = {"function_name": func.__qualname__, "module": func.__module__}
            try:
                trail._log_function("function_call", {
                    **call, "arguments": ev.json_value(arguments, "arguments", "audit_function")})
            except ev.AuditValidationError as exc:  # the recorded values together are too large: keep the rest
                described = {arg: {**describe(value), **({"unrecorded": exc.rule} if arg in allowed else {})}
                             for arg, value in (bound.arguments.items() if bound is not None else ())}
                trail._log_function("function_call", {
                    **call, "arguments": ev.json_value(described, "arguments", "audit_function")})
            return trail, time.perf_counter()

        def succeed(trail: AuditTrail, began: float, result: Any) -> None:
            returned = {**describe(result), **(_recorded(result, RETURN) if RETURN in allowed else {})}
            trail._log_function("function_return", {
                "function_name": func.__qualname__,
                "module": func.__module__,
                "return_value": ev.json_value(returned, "return_value", "audit_function"),
                "execution_time": time.perf_counter() - began,
            })
            trail.close("completed")

        def fail(trail: AuditTrail, began: float, exc: BaseException) -> None:
            try:
                trail.log_error(
                    type(exc).__name__, str(exc) or repr(exc), {"execution_time": time.perf_counter() - began}
                )
                trail.close("error")
            except AuditError as audit_exc:  # keep the caller's exception; say the audit broke too
                exc.add_note(f"secureml-audit could not record this failure: {audit_exc}")

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                trail, began = start(args, kwargs)
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    fail(trail, began, exc)
                    raise
                succeed(trail, began, result)
                return result

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            trail, began = start(args, kwargs)
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                fail(trail, began, exc)
                raise
            succeed(trail, began, result)
            return result

        return cast(F, wrapper)

    return decorator
