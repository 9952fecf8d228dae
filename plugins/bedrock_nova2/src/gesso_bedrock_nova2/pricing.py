"""Nova 2 Omni cost: the answer's token usage at the deployment's token prices, or the deployment's flat price an
image (``output_cost_per_image``, which gesso.pricing turns into a per-image price). AWS publishes no price for the
preview, so without ``prices=`` (or a proxy deployment's model_info) the cost is unknown: ``None``, never 0.
Before the call nothing counts its tokens, so a token-priced quote is unknown too; a flat price an image is not."""

from __future__ import annotations

from gesso.types import ImageResponse, Model


def cost(model: Model, response: ImageResponse) -> float | None:
    if model.priced_per == "image":
        return model.prices["image"] * len(response.data) if model.prices else None
    prices, usage = model.token_prices, response.usage
    if not prices or usage is None:
        return None
    return usage.get("input_tokens", 0) * prices["input"] + usage.get("output_tokens", 0) * prices["output"]
