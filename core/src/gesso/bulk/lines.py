"""The batch's input: each non-blank line of the JSONL file read and checked as one call (:class:`Line`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gesso import params
from gesso.bulk.result import BatchError

OPERATIONS = ("generate", "edit", "variation")


@dataclass
class Line:
    """One request of the input: its 1-based line ``number``, ``digest`` (what a manifest entry must match to
    count it done), and the call, or ``problem`` saying why the line cannot be read."""

    number: int
    digest: str
    operation: str = "generate"
    model: Any = None
    prompt: Any = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    image: Any = None
    mask: Any = None
    problem: str | None = None


def read_input(path: Path, *, model: str | None = None) -> list[Line]:
    """Every non-blank line of ``path`` as a :class:`Line` (``model`` for lines that name none)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(f"cannot read the batch file {str(path)!r}: {getattr(exc, 'strerror', None) or exc}") from exc
    base = path.parent
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.strip():
            lines.append(_line(number, raw, base, model))
    return lines


def _line(number: int, raw: str, base: Path, default_model: str | None) -> Line:
    try:
        obj = params.json_loads(raw)
    except ValueError as exc:
        return Line(number, _digest(raw), problem=f"not JSON: {exc}")
    if not isinstance(obj, dict):
        return Line(number, _digest(raw), problem=f"must be a JSON object of SDK kwargs (got {type(obj).__name__})")
    if "model" not in obj and default_model:
        obj = {"model": default_model, **obj}
    line = Line(number, _digest(json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)))
    kwargs = dict(obj)
    line.operation = kwargs.pop("operation", "generate")
    line.model = kwargs.pop("model", None)
    line.prompt = kwargs.pop("prompt", None)
    if line.operation not in OPERATIONS:
        line.problem = f"operation must be one of: {', '.join(OPERATIONS)} (got {line.operation!r})"
    elif not line.model:
        line.problem = "names no model (give each line a model, or a default with -m)"
    elif line.operation != "generate":
        if kwargs.get("image") is None:
            line.problem = f"an {line.operation} needs image (a path relative to the batch file)"
        line.image = _paths(kwargs.pop("image", None), base)
        line.mask = _paths(kwargs.pop("mask", None), base)
    line.kwargs = _files(kwargs, base)
    return line


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _paths(value: Any, base: Path) -> Any:
    """``image``/``mask`` of an edit or variation: paths relative to the batch file (``data:`` URLs kept)."""
    if isinstance(value, list):
        return [_paths(v, base) for v in value]
    if isinstance(value, str) and not value.startswith("data:"):
        return base / (value[1:] if value.startswith("@") else value)
    return value


def _files(value: Any, base: Path) -> Any:
    """``"@path"`` anywhere in a line names a file relative to the batch file, as ``-p image=@x.png`` does."""
    if isinstance(value, str) and value.startswith("@") and len(value) > 1:
        return base / value[1:]
    if isinstance(value, list):
        return [_files(v, base) for v in value]
    if isinstance(value, dict):
        return {k: _files(v, base) for k, v in value.items()}
    return value
