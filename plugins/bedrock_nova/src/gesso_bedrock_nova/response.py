"""Parse Nova Canvas responses: ``{"images": [...], "error": "...", "maskImage": "..."}``.

Output filtering is not an HTTP error on Bedrock: a 200 body carries ``error`` and fewer images. All
images withheld becomes a :class:`ContentFilteredError`; some withheld returns the rest and says so.
"""

from __future__ import annotations

import base64
import json

from gesso.errors import ContentFilteredError, ProviderError
from gesso.imaging import ImageFormatError, inspect
from gesso.types import GeneratedImage, ImageRequest, ParsedResponse, PreparedRequest, RawResponse, Size


def parse(request: ImageRequest, prepared: PreparedRequest, response: RawResponse) -> ParsedResponse:
    model = request.model_name
    try:
        data = json.loads(response.body)
    except ValueError as exc:
        raise ProviderError(f"Nova Canvas answered with a body that is not JSON: {exc}", model=model) from exc
    images = data.get("images") if isinstance(data, dict) else None
    error = data.get("error") if isinstance(data, dict) else None
    if images is None:
        images = []
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise ProviderError("Nova Canvas answered without a list of base64 images", model=model)
    if error and not images:
        raise ContentFilteredError(f"Bedrock content filter: {error}", model=model)
    if not images:
        raise ProviderError("Nova Canvas answered with no images and no error", model=model)
    requested = int(prepared.details.get("requested", 1))
    withheld = max(requested - len(images), 0) if error else 0
    warnings = [f"{error} ({withheld} of {requested} withheld)" if withheld else str(error)] if error else []
    mask = data.get("maskImage")
    return ParsedResponse(
        images=[GeneratedImage(b64=img) for img in images],
        filtered=withheld,
        warnings=warnings,
        size=_size_of(images[0]),
        mask=GeneratedImage(b64=mask) if isinstance(mask, str) and mask else None,
    )


def _size_of(b64: str) -> Size | None:
    try:
        info = inspect(base64.b64decode(b64[:64] + "=" * (-len(b64[:64]) % 4)))
    except (ImageFormatError, ValueError):
        return None
    return Size(info.width, info.height)
