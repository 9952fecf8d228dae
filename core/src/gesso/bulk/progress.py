"""How far a batch got, on stderr: a tqdm bar on a terminal, else a plain line every few seconds; warnings are
written through it."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from typing import IO, Any

#: seconds between the plain progress lines written when stderr is not a terminal
PROGRESS_INTERVAL = 10.0


class Progress:
    """A tqdm bar on a terminal (``mode`` ``"bar"``), else (``"lines"``) a plain line every ``interval``
    seconds; ``None``: silent."""

    def __init__(self, mode: str | None, total: int, stream: IO[str], interval: float = PROGRESS_INTERVAL) -> None:
        self.mode, self.total, self.stream, self.interval = mode, total, stream, interval
        self.bar: Any = None
        self.started = time.monotonic()
        self.last = self.started
        self.lines = self.images = 0
        self.spent = 0.0
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, unit="line", file=stream, dynamic_ncols=True, mininterval=0.2,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} lines [{elapsed}<{remaining}{postfix}]",
            )  # fmt: skip

    def update(self, images: int, cost: float | None) -> None:
        self.lines += 1
        self.images += images
        self.spent += cost or 0.0
        now = time.monotonic()
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.rate(now):.1f} img/s, ${self.spent:.4f}", refresh=False)
            self.bar.update(1)
        elif self.mode == "lines" and now - self.last >= self.interval:
            self.last = now
            self.note(self.line(now))

    def rate(self, now: float) -> float:
        return self.images / max(now - self.started, 1e-9)

    def line(self, now: float) -> str:
        elapsed = now - self.started
        left = self.total - self.lines
        eta = f"{left * elapsed / self.lines:.0f} s" if self.lines else "?"
        return (
            f"gesso batch: {self.lines}/{self.total} lines, {self.images} images, {self.rate(now):.1f} images/s, "
            f"${self.spent:.4f} spent, ETA {eta}"
        )

    def note(self, text: str) -> None:
        if self.mode is None:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.mode == "lines" and self.lines:
            self.note(self.line(time.monotonic()))


def isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def warnings_through(bar: Progress) -> Iterator[None]:
    """While a progress display runs, warnings are written through it (a bar is not broken by them)."""
    if bar.mode is None:
        yield
        return
    previous = warnings.showwarning

    def show(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
        bar.note(f"gesso: warning: {message}")

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous
