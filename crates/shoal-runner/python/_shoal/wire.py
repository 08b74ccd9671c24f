"""Values that cross the socket but are not plain JSON: ``config.workeroutput`` (which may hold
bytes) and ``warnings.WarningMessage`` objects, encoded as pytest-xdist's workers encode them
for its controller; and the check that a run-once fixture's value can cross at all."""

from __future__ import annotations

import json

_BYTES_KEY = "__shoal_bytes__"


def to_wire(value):
    """``config.workeroutput`` as JSON: bytes (syrupy's compressed report; execnet carries
    them for xdist) become base64 objects; anything else not JSON is left out (``None``)."""
    import base64

    def encode(obj):
        if isinstance(obj, (bytes, bytearray)):
            return {_BYTES_KEY: base64.b64encode(obj).decode("ascii")}
        raise TypeError(type(obj).__name__)

    try:
        return json.loads(json.dumps(value, default=encode))
    except (TypeError, ValueError):
        return None


def from_wire(value):
    """The inverse of to_wire."""
    import base64

    if isinstance(value, dict):
        if set(value) == {_BYTES_KEY}:
            return base64.b64decode(value[_BYTES_KEY])
        return {key: from_wire(v) for key, v in value.items()}
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    return value


def json_problem(value) -> str | None:
    """Why ``value`` cannot be sent as JSON, or None."""
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError) as exc:
        return str(exc) or type(exc).__name__
    return None


def warning_data(warning_message) -> dict:
    """A ``warnings.WarningMessage`` as JSON, as xdist's ``serialize_warning_message``."""
    message = warning_message.message
    category = warning_message.category
    return {
        "message": str(message),
        "class": [type(message).__module__, type(message).__qualname__]
        if isinstance(message, Warning)
        else None,
        "args": to_wire(list(message.args)) if isinstance(message, Warning) else None,
        "category": [category.__module__, category.__qualname__] if category else None,
        "filename": warning_message.filename,
        "lineno": warning_message.lineno,
        "line": warning_message.line,
    }


def warning_from_data(data: dict):
    """The ``warnings.WarningMessage`` of :func:`warning_data`, as xdist's controller
    rebuilds it: a plain ``Warning`` with the text where the class cannot be remade."""
    import warnings

    def lookup(path):
        import importlib

        module, name = path
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    message = data["message"]
    if data["class"]:
        try:
            message = lookup(data["class"])(*data["args"])
        except Exception:
            message = Warning("{}.{}: {}".format(*data["class"], data["message"]))
    try:
        category = lookup(data["category"]) if data["category"] else None
    except Exception:
        category = Warning
    return warnings.WarningMessage(
        message, category, data["filename"], data["lineno"], line=data["line"]
    )
