"""Nova Canvas cost: the per-image price for the output's quality and resolution tier, times the
images actually returned (withheld outputs are not charged)."""

from __future__ import annotations

from gesso.types import ImageResponse, Model, PreparedRequest, PriceTable, Size

#: Outputs up to this many pixels are in the lower price tier.
TIER_PIXELS = 1024 * 1024


def price_per_image(model: Model, size: Size | None, quality: str) -> float | None:
    if size is None:
        return None
    tier = "1024" if size.pixels <= TIER_PIXELS else "2048"
    assert isinstance(model.prices, PriceTable)  # every Nova model registers its price table
    return model.prices.price(quality=quality, tier=tier)


def cost(model: Model, prepared: PreparedRequest, response: ImageResponse) -> float | None:
    size = prepared.size
    if response.size and response.size != str(size):  # price what was produced
        size = Size.parse(response.size)
    price = price_per_image(model, size, prepared.quality or "standard")
    return None if price is None else price * len(response.data)
