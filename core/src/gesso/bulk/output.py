"""What a batch leaves behind besides the manifest: each line's images, as files in the output directory, and
the closing report ``gesso batch`` prints."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from gesso.bulk.lines import Line
from gesso.bulk.result import BatchError, BatchResult
from gesso.types import ImageResponse

_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


def prepare_dir(out: Path) -> None:
    """The output directory, made if it is not there (a :class:`BatchError` when it cannot be)."""
    if out.exists() and not out.is_dir():
        raise BatchError(f"output directory {str(out)!r} is a file; name a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BatchError(f"cannot make the output directory {str(out)!r}: {exc.strerror or exc}") from exc


def write_images(out: Path, line: Line, response: ImageResponse) -> list[str]:
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
