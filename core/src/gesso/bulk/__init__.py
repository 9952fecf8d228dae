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

The package's modules, by responsibility: :mod:`~gesso.bulk.lines` reads and checks the input's lines,
:mod:`~gesso.bulk.manifest` keeps the manifest (what is done, resuming), :mod:`~gesso.bulk.pricing` prices
lines (the budget, dry runs), :mod:`~gesso.bulk.run` runs them with bounded concurrency, :mod:`~gesso.bulk.progress`
shows how far it got, :mod:`~gesso.bulk.output` writes the images and the closing report, and
:mod:`~gesso.bulk.result` holds what a run reports.
"""

from __future__ import annotations

from gesso.bulk.lines import OPERATIONS, Line, read_input
from gesso.bulk.manifest import MANIFEST, read_manifest
from gesso.bulk.output import summary
from gesso.bulk.progress import PROGRESS_INTERVAL
from gesso.bulk.result import BatchError, BatchResult
from gesso.bulk.run import abatch, batch

__all__ = [
    "MANIFEST",
    "OPERATIONS",
    "PROGRESS_INTERVAL",
    "BatchError",
    "BatchResult",
    "Line",
    "abatch",
    "batch",
    "read_input",
    "read_manifest",
    "summary",
]
