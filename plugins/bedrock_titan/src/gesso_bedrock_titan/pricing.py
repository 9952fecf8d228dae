"""Titan cost: the per-image price for the quality and the price class of the output size (512-class or
1024-class in AWS's size table; edits, which return the input's size, by area), times images returned."""

from __future__ import annotations

from gesso.types import ImageResponse, Model, PreparedRequest, PriceTable, Size
from gesso_bedrock_titan.sizes import price_class


def cost(model: Model, prepared: PreparedRequest, response: ImageResponse) -> float | None:
    size = prepared.size
    if response.size and response.size != str(size):  # price what was produced
        size = Size.parse(response.size)
    if size is None:
        return None
    tier = {"quality": prepared.quality or "standard", "class": price_class(size)}
    assert isinstance(model.prices, PriceTable)  # every Titan model registers its price table
    return model.prices.price(**tier) * len(response.data)
