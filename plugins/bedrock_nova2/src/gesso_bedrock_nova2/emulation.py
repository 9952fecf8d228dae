"""Emulated Nova 2 Omni, through Converse: the body checked against the family's schema (wording our own: AWS's
messages for these checks were not captured), then an answer shaped as BOTO's ConverseResponse (``output.message``
with an image block, ``stopReason``, ``usage``, ``metrics``) holding a real PNG:

- a generation is made at the size S2 gives the aspect ratio the system prompt asks for (``Always generate images
  using 1:1 aspect ratio``), else at the default 16:9's (2704x1520);
- an edit keeps its input image's aspect ratio, scaled down to at most 1,048,576 pixels (S2).

Markers in the prompt: ``emulator:block-input`` / ``emulator:block-output`` stop with ``content_filtered`` and no
image; ``emulator:text-only`` answers with text and no image (``end_turn``); ``emulator:with-text`` adds a text
block beside the image. Token counts are the emulator's own (AWS documents none for images): a token per 4
characters of text and per 4,096 pixels of an input image, and a token per 1,024 pixels made.
"""

from __future__ import annotations

import math
import re
from typing import Any

from gesso.inputs import load
from gesso_bedrock.emulator import EmulatedCall, EmulatorError
from gesso_bedrock.emulator.everit import malformed, messages
from gesso_bedrock_nova2.models import DEFAULT_RATIO, EDIT_MAX_PIXELS, SIZES

TEXT_ONLY = "emulator:text-only"
WITH_TEXT = "emulator:with-text"
_RATIO = re.compile(r"\b(\d+:\d+) aspect ratio\b")


def emulate(call: EmulatedCall) -> dict[str, Any]:
    if call.api != "converse":
        raise EmulatorError.validation(
            "gesso emulator: Amazon Nova 2 Omni is emulated through Converse only (POST /model/{modelId}/converse)"
        )
    found = messages(call.model.param_schema, call.body)
    if found:
        raise EmulatorError.validation(malformed(found))
    content = call.body["messages"][0]["content"]
    prompt = " ".join(block["text"] for block in content if "text" in block)
    system = " ".join(block["text"] for block in call.body.get("system", ()))
    blocks = [block["image"] for block in content if "image" in block]
    tokens_in = math.ceil(len(prompt + system) / 4)
    if blocks:
        image, _ = load(blocks[0]["source"]["bytes"], "image")
        if image is None or image.info.format != blocks[0]["format"]:
            raise EmulatorError.validation("The image in messages[0].content could not be read as its format says.")
        width, height = _within(image.info.width, image.info.height, EDIT_MAX_PIXELS)
        tokens_in += math.ceil(width * height / 4096)
    else:
        asked = _RATIO.search(system)
        size = SIZES[asked.group(1)] if asked and asked.group(1) in SIZES else SIZES[DEFAULT_RATIO]
        width, height = size.width, size.height
    moderation = call.moderation(prompt)
    if moderation in ("input", "output"):
        return _answer([{"text": "I can't generate that image."}], "content_filtered", tokens_in, 8)
    if TEXT_ONLY in prompt:
        return _answer([{"text": "Here is a description instead of an image."}], "end_turn", tokens_in, 9)
    picture = call.image(width, height, prompt, system, *(b["source"]["bytes"][:64] for b in blocks), prompt=prompt)
    made: list[dict[str, Any]] = [{"image": {"format": "png", "source": {"bytes": picture}}}]
    if WITH_TEXT in prompt:
        made.insert(0, {"text": f"An image of: {prompt[:80]}"})
    return _answer(made, "end_turn", tokens_in, math.ceil(width * height / 1024))


def _within(width: int, height: int, most: int) -> tuple[int, int]:
    """The size with the same aspect ratio and at most ``most`` pixels (unchanged when it has no more)."""
    if width * height <= most:
        return width, height
    scale = math.sqrt(most / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def _answer(content: list[dict[str, Any]], stop: str, tokens_in: int, tokens_out: int) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {"inputTokens": tokens_in, "outputTokens": tokens_out, "totalTokens": tokens_in + tokens_out},
        "metrics": {"latencyMs": 0},
    }
