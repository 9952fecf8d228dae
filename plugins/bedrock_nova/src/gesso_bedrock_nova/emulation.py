"""Emulated Nova Canvas: validates bodies as Bedrock does and answers with deterministic PNGs."""

from __future__ import annotations

import base64
import binascii

from gesso.emulator import EmulatedCall, EmulatorError
from gesso.imaging import ImageFormatError, inspect
from gesso_bedrock_nova.request import CONFIG, INPUT_SIZED_TASKS, MAX_ASPECT, MAX_PIXELS, TASK_PARAMS

BLOCKED_INPUT = (
    "This request has been blocked by our content filters. Please adjust your text prompt to submit a new request."
)
ALL_BLOCKED = "All of the generated images have been blocked by our content filters."
SOME_BLOCKED = "Some of the generated images have been blocked by our content filters."
DEFAULT_SEED = 12


def emulate(call: EmulatedCall) -> dict:
    call.validate()
    body = call.body
    task = body["taskType"]
    params = body[TASK_PARAMS[task]]
    config = body.get(CONFIG, {})
    width, height = config.get("width", 1024), config.get("height", 1024)
    _check_size(width, height)
    if task in INPUT_SIZED_TASKS:
        width, height = _input_size(params.get("image") or params.get("sourceImage"))
    elif task == "IMAGE_VARIATION" and "width" not in config:
        width, height = _input_size(params["images"][0])

    verdict = call.moderation(params.get("text"), params.get("negativeText"), params.get("maskPrompt"))
    if verdict == "input":
        raise EmulatorError.validation(BLOCKED_INPUT)
    count = 1 if task == "BACKGROUND_REMOVAL" else config.get("numberOfImages", 1)
    seed = config.get("seed", DEFAULT_SEED)
    alpha = task == "BACKGROUND_REMOVAL"
    images = [call.image(width, height, task, params.get("text"), seed, i, alpha=alpha) for i in range(count)]
    if verdict == "output" or (verdict == "some" and count == 1):
        return {"images": [], "error": ALL_BLOCKED}
    if verdict == "some":
        return {"images": images[: count // 2], "error": SOME_BLOCKED}
    answer: dict = {"images": images}
    if task == "VIRTUAL_TRY_ON" and params.get("returnMask"):
        answer["maskImage"] = call.image(width, height, "mask", seed)
    return answer


def _check_size(width: int, height: int) -> None:
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise EmulatorError.validation(
            f"The aspect ratio of the requested image must be between 1:4 and 4:1. Given: ({width}, {height})."
        )
    if width * height >= MAX_PIXELS:
        raise EmulatorError.validation(
            f"The requested image must have fewer than {MAX_PIXELS} pixels. Given: ({width}, {height})."
        )


def _input_size(b64: str) -> tuple[int, int]:
    try:
        info = inspect(base64.b64decode(b64, validate=True))
    except (ImageFormatError, binascii.Error, ValueError) as exc:
        raise EmulatorError.validation(
            "Unable to decode the input image. Provide a base64-encoded PNG or JPEG."
        ) from exc
    return info.width, info.height
