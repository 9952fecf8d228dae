"""What lines cost before anything is sent: each line checked and priced as it would be sent (the budget's
check before a call starts), and the dry run, which prices every line to do."""

from __future__ import annotations

from typing import Any

from gesso.bulk.lines import Line
from gesso.bulk.result import BatchError, BatchResult
from gesso.errors import GessoError


def quote(line: Line, kwargs: dict[str, Any]) -> float | None:
    """The price of ``line`` called with ``kwargs`` (``None``: its model has none); a line that cannot be
    read, or whose call would be refused, raises."""
    from gesso import api

    if line.problem:
        raise BatchError(line.problem)
    if line.operation != "generate":  # a generation's image and mask are the model's own params, in kwargs
        kwargs = {**kwargs, "image": line.image, "mask": line.mask}
    return api.quote(line.model, line.prompt, operation=line.operation, **kwargs)


def dry_run(
    todo: list[Line], defaults: dict[str, Any], max_cost: float | None, spent: float, result: BatchResult
) -> None:
    """Price every line of ``todo`` into ``result`` (``quoted``, ``unpriced``, ``failures``, and the line the
    budget would stop before, counting the ``spent`` of earlier runs); nothing is sent."""
    total = 0.0
    for line in todo:
        try:
            price = quote(line, dict(defaults, **line.kwargs))
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
