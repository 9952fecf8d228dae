"""The manifest (``OUTDIR/manifest.jsonl``): one entry appended per finished line, read back to resume. A line
is done when its latest entry has its hash and succeeded (or failed, unless failures are retried)."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import IO, Any

from gesso.bulk.lines import Line
from gesso.bulk.result import BatchError
from gesso.types import ImageResponse

MANIFEST = "manifest.jsonl"


def read_manifest(path: Path) -> tuple[dict[int, dict[str, Any]], float]:
    """The latest entry of each line number, and what every entry together cost (a torn last line, left by
    a process killed while writing it, is ignored)."""
    latest: dict[int, dict[str, Any]] = {}
    spent = 0.0
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        return latest, spent
    except OSError as exc:
        raise BatchError(f"cannot read the manifest {str(path)!r}: {exc.strerror or exc}") from exc
    with handle:
        for raw in handle:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("line"), int):
                latest[entry["line"]] = entry
                cost = entry.get("cost")
                if isinstance(cost, (int, float)) and math.isfinite(cost):
                    spent += cost
    return latest, spent


def to_do(line: Line, entry: dict[str, Any] | None, retry_failed: bool) -> bool:
    """Whether ``line`` is to be run, given its latest manifest ``entry``."""
    if entry is None or entry.get("hash") != line.digest:
        return True
    return entry.get("status") != "ok" and retry_failed


def entry(
    line: Line,
    began: float,
    *,
    response: ImageResponse | None,
    files: list[str],
    error: BaseException | None,
    sent: bool,
    cost: float | None,
) -> dict[str, Any]:
    """The manifest entry of a finished ``line`` (``began``: when it started, on the monotonic clock)."""
    seeds = [d.seed for d in response.data] if response is not None else []
    seed: Any = seeds if any(s is not None for s in seeds) else line.kwargs.get("seed")
    written: dict[str, Any] = {
        "line": line.number,
        "hash": line.digest,
        "status": "ok" if error is None else "error",
        "model": line.model if isinstance(line.model, str) else None,
        "operation": line.operation,
        "files": files,
        "images": len(response.data) if response is not None else 0,
        "cost": cost,
        "seed": seed,
        "error": None if error is None else error_fields(error),
        "sent": sent,
        "seconds": round(time.monotonic() - began, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if response is not None and (response.filtered or response.warnings):
        written["filtered"] = response.filtered
        written["warnings"] = list(response.warnings)
    return written


def error_fields(exc: BaseException) -> dict[str, Any]:
    """An error as a manifest entry records it: its type, HTTP status (if it has one) and message."""
    return {"type": type(exc).__name__, "status": getattr(exc, "status_code", None), "message": str(exc)}


class Manifest:
    """The manifest, open for appending and locked against a second writer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.handle: IO[str] = path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise BatchError(f"cannot write the manifest {str(path)!r}: {exc.strerror or exc}") from exc
        if sys.platform != "win32":  # (Windows: no lock)
            import fcntl

            try:
                fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                self.handle.close()
                raise BatchError(
                    f"another gesso batch is writing {str(path)!r}; wait for it, or use another output directory"
                ) from exc
        with path.open("rb") as raw:  # a torn last line must not swallow the next entry
            size = raw.seek(0, 2)
            if size:
                raw.seek(size - 1)
                torn = raw.read(1) != b"\n"
        if size and torn:
            self.handle.write("\n")

    def write(self, entry: dict[str, Any]) -> None:
        self.handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()
