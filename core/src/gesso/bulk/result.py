"""What a batch reports: its :class:`BatchResult`, or the :class:`BatchError` that stops it as a whole."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from gesso.errors import GessoError


class BatchError(GessoError):
    """The batch as a whole cannot run: its input cannot be read, its output directory cannot be written,
    or another ``gesso batch`` is writing the same manifest."""

    status_code = 400
    type = "invalid_request_error"


@dataclass
class BatchResult:
    """What a run did. ``cost`` is this run's spend; ``total_cost`` every call the manifest records, earlier
    runs included. ``stopped`` is ``None``, ``"budget"`` or ``"interrupted"``. A dry run fills ``quoted`` (the
    price of the lines it would do), ``unpriced`` and ``failures`` (lines that would fail) and sends nothing."""

    input: str
    output_dir: str
    manifest: str
    lines: int = 0
    todo: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    not_started: int = 0
    abandoned: int = 0
    images: int = 0
    cost: float = 0.0
    total_cost: float = 0.0
    elapsed: float = 0.0
    stopped: str | None = None
    stopped_before: int | None = None
    dry_run: bool = False
    quoted: float | None = None
    unpriced: list[int] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
