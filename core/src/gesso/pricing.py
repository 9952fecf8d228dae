"""Deployment prices: what a team pays for a model when no public table holds it (a negotiated rate, a preview
model), given to a call as ``prices=`` (the SDK, ``gesso cost``, ``gesso batch``) or by a proxy deployment's
``model_info``. The names are litellm's ``model_info`` keys:

- ``output_cost_per_image``: USD an image made, one number for every image, or a mapping by the model's own
  price classes (the keys of its price table, e.g. Nova Canvas's ``standard_1024``... ``premium_2048``: every
  one of them);
- ``input_cost_per_token`` and ``output_cost_per_token``: USD a token, for a model priced by the tokens its
  response's ``usage`` counts.

A model is priced one way or the other (``Model.priced_per``); the other's keys are refused, never ignored, but
for one: a model priced by tokens may be given one ``output_cost_per_image`` for every image (a team's flat rate),
which is known before the call, as a budget needs (a token price is known only from the answer). A
response says which price applied: ``pricing`` is ``"deployment"`` or ``"public"`` (the model's own table), and
absent with ``cost: null`` when the model has neither: an unknown cost is never reported as 0.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Mapping
from typing import Any

import attrs

from gesso.errors import Violation
from gesso.types import Model, PriceTable

#: the keys a deployment's prices take
PER_IMAGE = "output_cost_per_image"
PER_TOKEN = ("input_cost_per_token", "output_cost_per_token")
KEYS = (PER_IMAGE, *PER_TOKEN)


class UnpricedModelWarning(UserWarning):
    """A call's model has no price (no public table, no deployment price): its cost is reported as unknown."""


@attrs.frozen
class Prices:
    """A deployment's prices, checked: USD an image (one number, or by price class), or USD a token."""

    per_image: float | Mapping[str, float] | None = None
    input_per_token: float | None = None
    output_per_token: float | None = None


def parse(value: Any, where: str = "prices") -> tuple[Prices | None, list[Violation]]:
    """``value`` (a mapping of :data:`KEYS`) as :class:`Prices`, and what is wrong with it (each a violation
    naming ``where.<key>``). None for None."""
    if value is None:
        return None, []
    if isinstance(value, Prices):
        return value, []
    if not isinstance(value, Mapping) or not value:
        return None, [Violation(where, f"must be a mapping of one or more of: {', '.join(KEYS)} (got {value!r})")]
    problems: list[Violation] = []
    for key in value:
        if key not in KEYS:
            problems.append(Violation(f"{where}.{key}", f"unknown (prices take: {', '.join(KEYS)})"))
    per_image = value.get(PER_IMAGE)
    if isinstance(per_image, Mapping):
        if not per_image:
            problems.append(Violation(f"{where}.{PER_IMAGE}", "must name at least one price class"))
        for name, amount in per_image.items():
            if not isinstance(name, str) or not _amount(amount):
                problems.append(Violation(f"{where}.{PER_IMAGE}.{name}", f"must be a USD amount >= 0 (got {amount!r})"))
    elif per_image is not None and not _amount(per_image):
        problems.append(Violation(f"{where}.{PER_IMAGE}", f"must be a USD amount >= 0, or a mapping of the model's "
                                  f"price classes to amounts (got {per_image!r})"))  # fmt: skip
    for key in PER_TOKEN:
        if key in value and not _amount(value[key]):
            problems.append(Violation(f"{where}.{key}", f"must be a USD amount >= 0 (got {value[key]!r})"))
    if per_image is not None and any(key in value for key in PER_TOKEN):
        problems.append(Violation(where, f"give {PER_IMAGE} or the token prices, not both"))
    if problems:
        return None, problems
    image = dict(per_image) if isinstance(per_image, Mapping) else per_image
    return Prices(image, value.get(PER_TOKEN[0]), value.get(PER_TOKEN[1])), []


def _amount(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def apply(model: Model, prices: Prices, where: str = "prices") -> tuple[Model, list[Violation]]:
    """``model`` priced at ``prices`` (what its cost hook reads: ``prices`` or ``token_prices``), or the
    violations that say why these prices do not fit it."""
    if model.priced_per == "token":
        if isinstance(prices.per_image, Mapping):
            return model, [Violation(f"{where}.{PER_IMAGE}", f"{model.id} has no price classes: give one amount "
                                     f"for every image, or {' and '.join(PER_TOKEN)}")]  # fmt: skip
        if prices.per_image is not None:  # your flat rate an image: known before the call, so a budget can hold it
            return attrs.evolve(model, priced_per="image", prices={"image": float(prices.per_image)}), []
        tokens_in, tokens_out = prices.input_per_token, prices.output_per_token
        if tokens_in is None or tokens_out is None:
            absent = PER_TOKEN[0] if tokens_in is None else PER_TOKEN[1]
            return model, [Violation(f"{where}.{absent}", f"required: {model.id} is priced by input and output "
                                     "tokens")]  # fmt: skip
        return attrs.evolve(model, token_prices={"input": float(tokens_in), "output": float(tokens_out)}), []
    if prices.per_image is None:
        return model, [Violation(f"{where}.{PER_TOKEN[0]}", f"{model.id} is priced per image: give {PER_IMAGE}")]
    classes = list(model.prices) or ["image"]
    if isinstance(prices.per_image, Mapping):
        given = set(prices.per_image)
        if given != set(classes):
            missing, extra = sorted(set(classes) - given), sorted(given - set(classes))
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"not a class of it: {', '.join(extra)}"] if extra else []
            )
            say = "; ".join(parts)
            return model, [Violation(f"{where}.{PER_IMAGE}", f"must price each of {model.id}'s classes "
                                     f"({', '.join(classes)}): {say}; or give one number for every image")]  # fmt: skip
        table = {name: float(prices.per_image[name]) for name in classes}
    else:
        table = {name: float(prices.per_image) for name in classes}
    if isinstance(model.prices, PriceTable):
        return attrs.evolve(model, prices=PriceTable(model.prices.dimensions, table)), []
    return attrs.evolve(model, prices=table), []


def has_price(model: Model) -> bool:
    """Whether ``model`` (priced for the call) has a price its cost hook can use."""
    return bool(model.token_prices) if model.priced_per == "token" else bool(model.prices)


_warned: set[str] = set()
_lock = threading.Lock()


def warn_unpriced(model: Model) -> None:
    """Warn once per model that its calls' cost is unknown, and how to give a price."""
    with _lock:
        if model.id in _warned:
            return
        _warned.add(model.id)
    keys = " and ".join(PER_TOKEN) if model.priced_per == "token" else PER_IMAGE
    warnings.warn(f"{model.id} has no public price: its calls' cost is reported as unknown (cost: null). Give "
                  f"your price with prices={{...}} ({keys}), or in a proxy deployment's model_info",
                  UnpricedModelWarning, stacklevel=4)  # fmt: skip
