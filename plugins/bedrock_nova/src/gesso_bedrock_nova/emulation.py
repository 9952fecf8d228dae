"""Emulated Nova Canvas: validates bodies as Bedrock does (the same schema, Bedrock's wording) and
answers with plausible, deterministic images for all seven tasks.

- TEXT_IMAGE, COLOR_GUIDED_GENERATION: synthetic images of the requested size (colour-guided ones in
  the requested colours).
- IMAGE_VARIATION: the first input's size unless a size is given.
- INPAINTING: the input with only the masked area (black in ``maskImage``, or a central region for a
  ``maskPrompt``) repainted; OUTPAINTING: only the rest (white in ``maskImage``) repainted.
- BACKGROUND_REMOVAL: the input as RGBA, with its left and right quarters transparent.
- VIRTUAL_TRY_ON: the source image with the garment area taken from the reference; ``returnMask`` adds
  the mask used.

Wording for checks whose real messages were not captured (image rules, masks) is our own.
"""

from __future__ import annotations

import hashlib
from typing import Any

from gesso.emulator import EmulatedCall, EmulatorError, edits
from gesso.inputs import ImageInput, load
from gesso_bedrock_nova.request import (
    CONFIG,
    MAIN_IMAGE,
    MAX_ASPECT,
    MAX_PIXELS,
    TASK_PARAMS,
    _image_rules,
)

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
    if "width" in config:
        _check_size(config["width"], config["height"])
    images = _decode_images(call)

    verdict = call.moderation(params.get("text"), params.get("negativeText"), params.get("maskPrompt"))
    if verdict == "input":
        raise EmulatorError.validation(BLOCKED_INPUT)
    count = 1 if task == "BACKGROUND_REMOVAL" else config.get("numberOfImages", 1)
    seed = config.get("seed", DEFAULT_SEED)
    main = images.get(MAIN_IMAGE.get(task, ""))
    if "width" in config:
        width, height = config["width"], config["height"]
    elif main is not None:
        width, height = main.info.width, main.info.height
    else:
        width, height = 1024, 1024
    key = (task, params.get("text"), seed, *(hashlib.sha256(i.data).hexdigest()[:12] for i in images.values()))

    outputs = [_render(task, params, images, width, height, (*key, index)) for index in range(count)]
    if verdict == "output" or (verdict == "some" and count == 1):
        return {"images": [], "error": ALL_BLOCKED}
    if verdict == "some":
        return {"images": outputs[: count // 2], "error": SOME_BLOCKED}
    answer: dict[str, Any] = {"images": outputs}
    if task == "VIRTUAL_TRY_ON" and params.get("returnMask"):
        answer["maskImage"] = edits.png_b64(_tryon_mask(images["virtualTryOnParams.sourceImage"], params))
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


def _decode_images(call: EmulatedCall) -> dict[str, ImageInput]:
    """Every input image by its dotted body path; Bedrock-style errors for bad ones."""
    found = call.decode_images()
    problems = _image_rules(found)
    if problems:
        raise EmulatorError.validation(f"Invalid input image: {problems[0]}.")
    return {where: image for where, (image, _) in found.items()}


def _render(task: str, params: dict, images: dict[str, ImageInput], width: int, height: int, key: tuple) -> str:
    main = images.get(MAIN_IMAGE.get(task, ""))
    if task == "TEXT_IMAGE":
        return edits.generate(width, height, key)
    if task == "COLOR_GUIDED_GENERATION":
        return edits.color_guided(params["colors"], width, height, key)
    if task == "IMAGE_VARIATION":
        return edits.variation(main, width, height, key)
    if task == "BACKGROUND_REMOVAL":
        return edits.remove_background(main)
    if task in ("INPAINTING", "OUTPAINTING"):
        mask = images.get(f"{TASK_PARAMS[task]}.maskImage")
        return edits.repaint(main, mask, key, edit_black=task == "INPAINTING")
    # VIRTUAL_TRY_ON: the garment area (black in the mask) comes from the reference image
    from PIL import ImageOps

    area = ImageOps.invert(_tryon_mask(main, params))
    return edits.paste_from(main, images["virtualTryOnParams.referenceImage"], area)


def _tryon_mask(source: ImageInput, params: dict) -> Any:
    if params["maskType"] == "IMAGE":
        return edits.pil(load(params["imageBasedMask"]["maskImage"], "mask")[0]).convert("L")
    return edits.region_mask((source.info.width, source.info.height))
