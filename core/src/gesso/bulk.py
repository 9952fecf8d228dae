"""Bulk generation: ``gesso batch`` and :func:`batch`, one SDK call per line of a JSONL file.

Each line is a JSON object of SDK kwargs (``model``, ``prompt``, ``n``, ``size``, the model's own parameters,
provider options) plus ``operation`` (``generate``, the default, ``edit`` or ``variation``), whose ``image``
(a path or a list of paths) and ``mask`` are files relative to the input file; elsewhere ``"@path"`` names a
file, as on the command line. Lines run on the async SDK, at most ``concurrency`` at once.

Every finished line appends one entry to ``OUTDIR/manifest.jsonl`` (flushed at once): its line number, a hash
of its content, the files written, the cost, the seed and the error. A later run into the same directory
skips a line whose latest entry has the same hash and succeeded (or failed, unless ``retry_failed``), so
nothing done is paid for twice and an edited line is redone. ``max_cost`` caps what the manifest records as
spent, counting the price of calls in flight: a call that could pass it is not started, and the batch stops.
On SIGINT or SIGTERM no new call starts; the calls in flight (already being paid for) finish and are recorded.
A second signal abandons them (they may be charged, and will be redone on the next run).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import math
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from gesso import params
from gesso.errors import GessoError

MANIFEST = "manifest.jsonl"
OPERATIONS = ("generate", "edit", "variation")
#: seconds between the plain progress lines written when stderr is not a terminal
PROGRESS_INTERVAL = 10.0
_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


class BatchError(GessoError):
    """The batch as a whole cannot run: its input cannot be read, its output directory cannot be written,
    or another ``gesso batch`` is writing the same manifest."""

    status_code = 400
    type = "invalid_request_error"


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


# -- input ----------------------------------------------------------------------------------------------


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


# -- the manifest ---------------------------------------------------------------------------------------


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


def _to_do(line: Line, entry: dict[str, Any] | None, retry_failed: bool) -> bool:
    if entry is None or entry.get("hash") != line.digest:
        return True
    return entry.get("status") != "ok" and retry_failed


class _Manifest:
    """The manifest, open for appending and locked against a second writer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.handle: IO[str] = path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise BatchError(f"cannot write the manifest {str(path)!r}: {exc.strerror or exc}") from exc
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
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


# -- progress -------------------------------------------------------------------------------------------


class _Progress:
    """A tqdm bar on a terminal (stderr), else a plain line every ``interval`` seconds; ``None``: silent."""

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


# -- running --------------------------------------------------------------------------------------------


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
    """Run every line of the JSONL file ``input`` (see the module's docstring), writing the images and
    ``manifest.jsonl`` into ``output_dir``; returns a :class:`BatchResult`.

    ``model`` is the model of lines that name none; ``options`` are kwargs given to every line (a line's own
    win): provider options such as ``aws_region_name``. ``emulator`` runs each provider's emulator and sends
    every line there. ``progress`` shows a bar on stderr when it is a terminal, else a plain line every
    10 seconds. In the main thread, SIGINT and SIGTERM stop the batch gracefully (see the module)."""
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
        _prepare_dir(out)
    manifest_path = out / MANIFEST
    latest, spent_before = read_manifest(manifest_path)
    todo = [line for line in lines if _to_do(line, latest.get(line.number), retry_failed)]
    result = BatchResult(
        input=str(source), output_dir=str(out), manifest=str(manifest_path), lines=len(lines), todo=len(todo),
        skipped=len(lines) - len(todo), total_cost=round(spent_before, 6), dry_run=dry_run,
    )  # fmt: skip
    defaults = dict(options or {})
    if dry_run:
        _dry_run(todo, defaults, max_cost, spent_before, result)
        return result
    stream = sys.stderr
    mode = ("bar" if _isatty(stream) else "lines") if progress else None
    with contextlib.ExitStack() as stack:
        emulated = _emulators(stack, todo, defaults) if emulator else {}
        book = stack.enter_context(contextlib.closing(_Manifest(manifest_path)))
        bar = _Progress(mode, len(todo), stream)
        stack.callback(bar.close)
        stack.enter_context(_warnings_through(bar))
        run = _Run(todo, out, defaults, emulated, book, bar, max_cost, spent_before, result)
        if mode == "lines":
            skipped = f" ({result.skipped} done before)" if result.skipped else ""
            bar.note(f"gesso batch: {len(todo)} lines to do{skipped}, {concurrency} at once")
        await run.execute(concurrency, handle_signals)
    result.total_cost = round(spent_before + result.cost, 6)
    if result.stopped == "interrupted" and (progress or resume_hint):
        hint = resume_hint or "run the same batch again (same input and output directory)"
        print(f"gesso: interrupted; the manifest has every finished line. To resume: {hint}", file=stream)
    return result


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _prepare_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BatchError(f"output directory {str(out)!r} is a file; name a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BatchError(f"cannot make the output directory {str(out)!r}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def _warnings_through(bar: _Progress) -> Iterator[None]:
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


def _emulators(stack: contextlib.ExitStack, todo: list[Line], defaults: dict[str, Any]) -> dict[str, dict[str, Any]]:
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


def _call_kwargs(line: Line, defaults: dict[str, Any], emulated: dict[str, dict[str, Any]]) -> dict[str, Any]:
    kwargs = {**defaults, **line.kwargs}
    if emulated:
        from gesso import plugins

        provider = plugins.get_registry().split_provider(line.model)
        kwargs.update(emulated.get(provider.name if provider else "", {}))
    return kwargs


def _quote(line: Line, kwargs: dict[str, Any]) -> float | None:
    from gesso.api import quote

    if line.problem:
        raise BatchError(line.problem)
    if line.operation != "generate":  # a generation's image and mask are the model's own params, in kwargs
        kwargs = {**kwargs, "image": line.image, "mask": line.mask}
    return quote(line.model, line.prompt, operation=line.operation, **kwargs)


def _dry_run(
    todo: list[Line], defaults: dict[str, Any], max_cost: float | None, spent: float, result: BatchResult
) -> None:
    total = 0.0
    for line in todo:
        try:
            price = _quote(line, dict(defaults, **line.kwargs))
        except GessoError as exc:
            result.failures.append((line.number, str(exc)))
            continue
        if price is None:
            result.unpriced.append(line.number)
            continue
        if max_cost is not None and result.stopped_before is None and spent + total + price > max_cost + 1e-9:
            result.stopped_before = line.number
        total += price
    result.quoted = round(total, 6)


class _Run:
    """One run's lines in flight, its budget and its manifest."""

    def __init__(
        self,
        todo: list[Line],
        out: Path,
        defaults: dict[str, Any],
        emulated: dict[str, dict[str, Any]],
        book: _Manifest,
        bar: _Progress,
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
        kwargs = _call_kwargs(line, self.defaults, self.emulated)
        try:
            price = _quote(line, kwargs)  # the call checked and priced; nothing sent
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
            response = await _send(line, kwargs)
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
            files = _write_images(self.out, line, response)
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
        response: Any = None,
        files: list[str] | None = None,
        error: BaseException | None = None,
        sent: bool = True,
        cost: float | None = None,
    ) -> None:
        images = len(response.data) if response is not None else 0
        if response is not None:
            cost = response.cost  # None: the model has no price
        elif cost is None:
            cost = 0.0  # a failed call is not charged
        seeds = [d.seed for d in response.data] if response is not None else []
        seed: Any = seeds if any(s is not None for s in seeds) else line.kwargs.get("seed")
        entry: dict[str, Any] = {
            "line": line.number,
            "hash": line.digest,
            "status": "ok" if error is None else "error",
            "model": line.model if isinstance(line.model, str) else None,
            "operation": line.operation,
            "files": files or [],
            "images": images,
            "cost": cost,
            "seed": seed,
            "error": None if error is None else _error(error),
            "sent": sent,
            "seconds": round(time.monotonic() - began, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if response is not None and (response.filtered or response.warnings):
            entry["filtered"] = response.filtered
            entry["warnings"] = list(response.warnings)
        self.book.write(entry)
        result = self.result
        if error is None:
            result.done += 1
        else:
            result.failed += 1
            result.failures.append((line.number, _error(error)["message"]))
        result.images += images
        result.cost += cost or 0.0
        self.bar.update(images, cost)


def _error(exc: BaseException) -> dict[str, Any]:
    return {"type": type(exc).__name__, "status": getattr(exc, "status_code", None), "message": str(exc)}


async def _send(line: Line, kwargs: dict[str, Any]) -> Any:
    from gesso import api

    if line.operation == "edit":
        return await api.aimage_edit(line.model, line.image, line.prompt, line.mask, **kwargs)
    if line.operation == "variation":
        if line.prompt is not None:
            kwargs = {**kwargs, "prompt": line.prompt}
        return await api.aimage_variation(line.model, line.image, **kwargs)
    return await api.aimage_generation(line.model, line.prompt, **kwargs)


def _write_images(out: Path, line: Line, response: Any) -> list[str]:
    """Each image as ``<line>-<slug>-<i>.<ext>`` in ``out``; the names, relative to ``out`` (an image stored
    elsewhere by an ``image_store`` is listed by its URL)."""
    from gesso.imaging import ImageFormatError, inspect

    slug = re.sub(r"[^a-z0-9]+", "-", str(line.prompt or "").lower()).strip("-")[:40] or line.operation
    files = []
    for index, item in enumerate(response.data, start=1):
        if item.b64_json:
            data = base64.b64decode(item.b64_json)
        elif item.url and item.url.startswith("data:"):
            data = base64.b64decode(item.url.partition(",")[2])
        else:
            files.append(item.url or "")
            continue
        try:
            ext = _EXTENSIONS.get(inspect(data).format, "png")
        except ImageFormatError:
            ext = "bin"
        name = f"{line.number:05d}-{slug}-{index}.{ext}"
        (out / name).write_bytes(data)
        files.append(name)
    return files


def summary(result: BatchResult, *, limit: int = 10) -> str:
    """The closing report ``gesso batch`` prints."""
    out = []
    if result.dry_run:
        skipped = f" ({result.skipped} done before)" if result.skipped else ""
        out.append(f"dry run of {result.input}: {result.todo} of {result.lines} lines to do{skipped}; nothing sent")
        out.append(f"would cost: ${result.quoted or 0:.4f}" + (f" + {len(result.unpriced)} lines of unknown price"
                                                              if result.unpriced else ""))  # fmt: skip
        if result.stopped_before is not None:
            out.append(f"the budget would stop the batch before line {result.stopped_before}")
        if result.failures:
            out.append(f"would fail ({len(result.failures)}):")
    else:
        rate = result.images / result.elapsed if result.elapsed else 0.0
        out.append(
            f"batch {result.input}: {result.lines} lines: {result.done} done, {result.failed} failed, "
            f"{result.skipped} skipped (done before), {result.not_started} not started"
        )
        out.append(
            f"{result.images} images in {result.elapsed:.1f} s ({rate:.1f} images/s); spent ${result.cost:.4f} "
            f"this run, ${result.total_cost:.4f} in all"
        )
        if result.stopped == "budget":
            out.append(f"stopped before line {result.stopped_before}: it could pass the budget")
        elif result.stopped == "interrupted":
            out.append("interrupted" + (f"; {result.abandoned} calls abandoned in flight" if result.abandoned else ""))
        out.append(f"manifest: {result.manifest}")
        if result.failures:
            out.append(f"failed ({len(result.failures)}):")
    for number, message in result.failures[:limit]:
        out.append(f"  line {number}: " + "\n    ".join(message.splitlines()))
    if len(result.failures) > limit:
        out.append(f"  ... and {len(result.failures) - limit} more (see the manifest)")
    return "\n".join(out)
