"""Running a batch: :func:`batch` and :func:`abatch` read the input and the manifest, then :class:`Run` calls the
lines to do on the async SDK, at most ``concurrency`` at once, within the budget, stopping gracefully on a
signal; each finished line is recorded in the manifest at once."""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gesso.bulk import pricing
from gesso.bulk.lines import Line, read_input
from gesso.bulk.manifest import MANIFEST, Manifest, entry, error_fields, read_manifest, to_do
from gesso.bulk.output import prepare_dir, write_images
from gesso.bulk.progress import Progress, isatty, warnings_through
from gesso.bulk.result import BatchError, BatchResult
from gesso.errors import GessoError
from gesso.types import ImageResponse


def batch(
    input: str | Path,
    output_dir: str | Path,
    *,
    concurrency: int = 4,
    max_cost: float | None = None,
    dry_run: bool = False,
    retry_failed: bool = False,
    model: str | None = None,
    options: Mapping[str, Any] | None = None,
    emulator: bool = False,
    progress: bool = False,
    resume_hint: str | None = None,
) -> BatchResult:
    """Run every line of the JSONL file ``input`` (see :mod:`gesso.bulk`), writing the images and
    ``manifest.jsonl`` into ``output_dir``; returns a :class:`BatchResult`.

    ``model`` is the model of lines that name none; ``options`` are kwargs given to every line (a line's own
    win): provider options such as ``aws_region_name``. ``emulator`` runs each provider's emulator and sends
    every line there. ``progress`` shows a bar on stderr when it is a terminal, else a plain line every
    10 seconds. In the main thread, SIGINT and SIGTERM stop the batch gracefully (see :mod:`gesso.bulk`)."""
    signals = threading.current_thread() is threading.main_thread()
    return asyncio.run(
        abatch(
            input, output_dir, concurrency=concurrency, max_cost=max_cost, dry_run=dry_run,
            retry_failed=retry_failed, model=model, options=options, emulator=emulator, progress=progress,
            resume_hint=resume_hint, handle_signals=signals,
        )
    )  # fmt: skip


async def abatch(
    input: str | Path,
    output_dir: str | Path,
    *,
    concurrency: int = 4,
    max_cost: float | None = None,
    dry_run: bool = False,
    retry_failed: bool = False,
    model: str | None = None,
    options: Mapping[str, Any] | None = None,
    emulator: bool = False,
    progress: bool = False,
    resume_hint: str | None = None,
    handle_signals: bool = False,
) -> BatchResult:
    """:func:`batch` on the running event loop (signals are handled only with ``handle_signals``)."""
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise BatchError(f"concurrency must be a whole number of at least 1 (got {concurrency!r})")
    if max_cost is not None and not (isinstance(max_cost, (int, float)) and math.isfinite(max_cost) and max_cost >= 0):
        raise BatchError(f"max_cost must be a non-negative number of USD (got {max_cost!r})")
    source, out = Path(input), Path(output_dir)
    lines = read_input(source, model=model)
    if not dry_run:
        prepare_dir(out)
    manifest_path = out / MANIFEST
    latest, spent_before = read_manifest(manifest_path)
    todo = [line for line in lines if to_do(line, latest.get(line.number), retry_failed)]
    result = BatchResult(
        input=str(source), output_dir=str(out), manifest=str(manifest_path), lines=len(lines), todo=len(todo),
        skipped=len(lines) - len(todo), total_cost=round(spent_before, 6), dry_run=dry_run,
    )  # fmt: skip
    defaults = dict(options or {})
    if dry_run:
        pricing.dry_run(todo, defaults, max_cost, spent_before, result)
        return result
    stream = sys.stderr
    mode = ("bar" if isatty(stream) else "lines") if progress else None
    with contextlib.ExitStack() as stack:
        emulated = emulators(stack, todo, defaults) if emulator else {}
        book = stack.enter_context(contextlib.closing(Manifest(manifest_path)))
        bar = Progress(mode, len(todo), stream)
        stack.callback(bar.close)
        stack.enter_context(warnings_through(bar))
        run = Run(todo, out, defaults, emulated, book, bar, max_cost, spent_before, result)
        if mode == "lines":
            skipped = f" ({result.skipped} done before)" if result.skipped else ""
            bar.note(f"gesso batch: {len(todo)} lines to do{skipped}, {concurrency} at once")
        await run.execute(concurrency, handle_signals)
    result.total_cost = round(spent_before + result.cost, 6)
    if result.stopped == "interrupted" and (progress or resume_hint):
        hint = resume_hint or "run the same batch again (same input and output directory)"
        print(f"gesso: interrupted; the manifest has every finished line. To resume: {hint}", file=stream)
    return result


def emulators(stack: contextlib.ExitStack, todo: list[Line], defaults: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One emulator per provider the lines use (started with the first of its lines' models): the options
    that point that provider's lines at it."""
    from gesso import plugins

    registry = plugins.get_registry()
    found: dict[str, dict[str, Any]] = {}
    for line in todo:
        if line.problem or not isinstance(line.model, str):
            continue
        provider = registry.split_provider(line.model)
        if provider is None or provider.name in found:
            continue
        try:
            found[provider.name] = stack.enter_context(registry.emulate(line.model, {**defaults, **line.kwargs}))
        except GessoError:
            continue  # the line's own call says what is wrong with its model
    return found


def call_kwargs(line: Line, defaults: dict[str, Any], emulated: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The kwargs ``line`` is called with: the batch's options, the line's own, and its emulator's."""
    kwargs = {**defaults, **line.kwargs}
    if emulated:
        from gesso import plugins

        provider = plugins.get_registry().split_provider(line.model)
        kwargs.update(emulated.get(provider.name if provider else "", {}))
    return kwargs


async def send(line: Line, kwargs: dict[str, Any]) -> ImageResponse:
    """``line``'s call, on the async SDK."""
    from gesso import api

    if line.operation == "edit":
        return await api.aimage_edit(line.model, line.image, line.prompt, line.mask, **kwargs)
    if line.operation == "variation":
        if line.prompt is not None:
            kwargs = {**kwargs, "prompt": line.prompt}
        return await api.aimage_variation(line.model, line.image, **kwargs)
    return await api.aimage_generation(line.model, line.prompt, **kwargs)


class Run:
    """One run's lines in flight, its budget and its manifest."""

    def __init__(
        self,
        todo: list[Line],
        out: Path,
        defaults: dict[str, Any],
        emulated: dict[str, dict[str, Any]],
        book: Manifest,
        bar: Progress,
        max_cost: float | None,
        spent_before: float,
        result: BatchResult,
    ) -> None:
        self.todo, self.out, self.defaults, self.emulated = todo, out, defaults, emulated
        self.book, self.bar, self.max_cost, self.spent_before, self.result = book, bar, max_cost, spent_before, result
        self.next = 0
        self.reserved = 0.0
        self.in_flight = 0
        self.signals = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def execute(self, concurrency: int, handle_signals: bool) -> None:
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        installed = []
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, self.on_signal)
                    installed.append(sig)
        try:
            self.tasks = [asyncio.ensure_future(self.worker()) for _ in range(min(concurrency, len(self.todo)))]
            await asyncio.gather(*self.tasks, return_exceptions=True)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            result = self.result
            result.elapsed = round(time.monotonic() - started, 3)
            result.cost = round(result.cost, 6)
            result.not_started = len(self.todo) - self.next + (1 if result.stopped == "budget" else 0)

    def on_signal(self) -> None:
        self.signals += 1
        if self.signals == 1:
            self.result.stopped = self.result.stopped or "interrupted"
            self.bar.note(
                f"gesso: interrupted: no new line starts; finishing the {self.in_flight} call(s) in flight (they are "
                "being paid for). Interrupt again to abandon them."
            )
            if self.bar.mode is None:
                print("gesso: interrupted: finishing the calls in flight", file=sys.stderr, flush=True)
        else:
            self.result.stopped = "interrupted"
            for task in self.tasks:
                task.cancel()

    async def worker(self) -> None:
        while self.result.stopped is None and self.next < len(self.todo):
            line = self.todo[self.next]
            self.next += 1
            await self.one(line)

    async def one(self, line: Line) -> None:
        began = time.monotonic()
        kwargs = call_kwargs(line, self.defaults, self.emulated)
        try:
            price = pricing.quote(line, kwargs)  # the call checked and priced; nothing sent
        except GessoError as exc:
            self.record(line, began, error=exc, sent=False)
            return
        if self.max_cost is not None:
            if price is None:
                message = "its price is unknown, so max_cost cannot bound it; nothing was sent"
                self.record(line, began, error=BatchError(message), sent=False)
                return
            committed = self.spent_before + self.result.cost + self.reserved
            if committed + price > self.max_cost + 1e-9:
                self.result.stopped = "budget"
                self.result.stopped_before = line.number
                self.bar.note(
                    f"gesso batch: stopping before line {line.number} (${price:.4f}): ${committed:.4f} spent or held "
                    f"by calls in flight, budget ${self.max_cost:.4f}"
                )
                return
        self.reserved += price or 0.0
        self.in_flight += 1
        try:
            response = await send(line, kwargs)
        except GessoError as exc:
            self.record(line, began, error=exc, sent=True)
            return
        except asyncio.CancelledError:
            self.result.abandoned += 1
            raise
        except Exception as exc:  # a plugin's bug: the line fails, the batch goes on
            self.record(line, began, error=exc, sent=True)
            return
        finally:
            self.in_flight -= 1
            self.reserved -= price or 0.0
        try:
            files = write_images(self.out, line, response)
        except OSError as exc:
            error = BatchError(f"the call succeeded (and was paid) but its images could not be written: {exc}")
            self.record(line, began, error=error, sent=True, cost=response.cost)
            return
        self.record(line, began, response=response, files=files)

    def record(
        self,
        line: Line,
        began: float,
        *,
        response: ImageResponse | None = None,
        files: list[str] | None = None,
        error: BaseException | None = None,
        sent: bool = True,
        cost: float | None = None,
    ) -> None:
        """A finished line: its manifest entry written (and flushed), and counted in the result and progress."""
        if response is not None:
            cost = response.cost  # None: the model has no price
        elif cost is None:
            cost = 0.0  # a failed call is not charged
        self.book.write(entry(line, began, response=response, files=files or [], error=error, sent=sent, cost=cost))
        images = len(response.data) if response is not None else 0
        result = self.result
        if error is None:
            result.done += 1
        else:
            result.failed += 1
            result.failures.append((line.number, error_fields(error)["message"]))
        result.images += images
        result.cost += cost or 0.0
        self.bar.update(images, cost)
