"""Read a Nova 2 Omni Converse answer: ``output.message.content`` holds the image as an image block
(``{"image": {"format": "png", "source": {"bytes": ...}}}``, S1 and S2 read it there), possibly beside text blocks
(S1: "it can include images and text in the response"); ``usage`` counts the tokens (``inputTokens``,
``outputTokens``: BOTO's TokenUsage) and ``stopReason`` says why the model stopped (BOTO's StopReason).

The text becomes the image's ``revised_prompt``. An answer without an image is an error that says what the model
wrote and why it stopped, never an empty ``data``: a content filter's stop (``content_filtered``,
``guardrail_intervened``) a :class:`~gesso.errors.ContentFilteredError`, any other a
:class:`~gesso.errors.ProviderError`.
"""

from __future__ import annotations

from typing import Any

from gesso import family
from gesso.errors import ContentFilteredError, ProviderError
from gesso.imaging import inspect_b64
from gesso.types import GeneratedImage, ImageRequest, ParsedResponse, RawResponse, Size

#: stop reasons that mean a filter withheld the output (BOTO's StopReason enum)
FILTERED = frozenset({"content_filtered", "guardrail_intervened"})
#: the image formats an image block names (BOTO's ImageFormat), as MIME types
MIME = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}


def parse(request: ImageRequest, response: RawResponse) -> ParsedResponse:
    model = request.model_name
    data = family.json_answer(request, response)
    output = data.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        raise ProviderError("Amazon Nova 2 Omni answered without output.message.content", model=model)
    texts = [block["text"] for block in content if isinstance(block, dict) and isinstance(block.get("text"), str)]
    said = " ".join(text.strip() for text in texts if text.strip()) or None
    images = [_image(block["image"], model) for block in content if isinstance(block, dict) and "image" in block]
    stop = data.get("stopReason")
    if not images:
        wrote = f"; it wrote: {said[:500]}" if said else ""
        if stop in FILTERED:
            raise ContentFilteredError(f"Bedrock content filter: Amazon Nova 2 Omni stopped ({stop}) without an "
                                       f"image{wrote}", model=model)  # fmt: skip
        hint = ("raise maxTokens" if stop == "max_tokens"
                else "ask for an image plainly in the prompt (e.g. 'Create an image of ...')")  # fmt: skip
        raise ProviderError(f"Amazon Nova 2 Omni answered without an image (stopReason {stop!r}){wrote}; {hint}",
                            model=model)  # fmt: skip
    info = inspect_b64(images[0].b64)
    if info is None or MIME.get(info.format) != images[0].mime_type:
        raise ProviderError("Amazon Nova 2 Omni answered with image bytes that are not the image its block names",
                            model=model)  # fmt: skip
    usage = _usage(data.get("usage"))
    extra = [f"the answer held {len(images)} images; the first is returned"] if len(images) > 1 else []
    return ParsedResponse(
        images=images[:1],  # one image an answer: what a call is asked for, priced and held
        size=Size(info.width, info.height),  # info was checked above
        text=said,
        usage=usage,
        # BOTO's ConverseResponse requires usage: without it, a token price cannot count this call's cost
        warnings=extra + ([] if usage is not None else ["the answer counted no tokens (no usage)"]),
    )


def _image(block: Any, model: str) -> GeneratedImage:
    source = block.get("source") if isinstance(block, dict) else None
    b64 = source.get("bytes") if isinstance(source, dict) else None
    fmt = block.get("format") if isinstance(block, dict) else None
    if not isinstance(b64, str) or not b64 or fmt not in MIME:
        raise ProviderError("Amazon Nova 2 Omni answered with an image block without format and source.bytes",
                            model=model)  # fmt: skip
    return GeneratedImage(b64=b64, mime_type=MIME[fmt])


def _usage(usage: Any) -> dict[str, int] | None:
    if not isinstance(usage, dict):
        return None
    tokens_in, tokens_out = usage.get("inputTokens"), usage.get("outputTokens")
    if type(tokens_in) is not int or type(tokens_out) is not int or min(tokens_in, tokens_out) < 0:
        return None
    return {"input_tokens": int(tokens_in), "output_tokens": int(tokens_out)}
