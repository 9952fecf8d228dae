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

import base64
import hashlib
import io
from typing import Any

from gesso.emulator import EmulatedCall, EmulatorError
from gesso.emulator.images import synth_png
from gesso.inputs import ImageInput, load
from gesso_bedrock_nova.request import (
    CONFIG,
    MAIN_IMAGE,
    MASKED_IMAGE,
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
    images = _decode_images(task, params)

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
        answer["maskImage"] = _png_b64(_tryon_mask(images["virtualTryOnParams.sourceImage"], params))
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


def _decode_images(task: str, params: dict) -> dict[str, ImageInput]:
    """Every input image of the task, by its dotted body path; Bedrock-style errors for bad ones."""
    obj = TASK_PARAMS[task]
    found: dict[str, tuple[ImageInput, str]] = {}
    candidates: list[tuple[str, Any, str]] = []
    for name, value in params.items():
        if name == "images":
            candidates += [(f"{obj}.images[{i}]", v, "image") for i, v in enumerate(value)]
        elif name in ("image", "conditionImage", "referenceImage", "sourceImage"):
            candidates.append((f"{obj}.{name}", value, "image"))
        elif name == "maskImage":
            candidates.append((f"{obj}.maskImage", value, "mask"))
        elif name == "imageBasedMask":
            candidates.append((f"{obj}.imageBasedMask.maskImage", value["maskImage"], "mask"))
    for where, value, kind in candidates:
        image, problems = load(value, where)
        if image is None:
            raise EmulatorError.validation(
                f"Unable to decode the image at {where}. Provide a base64-encoded PNG or JPEG."
            )
        found[where] = (image, kind)
    problems = _image_rules(found)
    if problems:
        raise EmulatorError.validation(f"Invalid input image: {problems[0]}.")
    return {where: image for where, (image, _) in found.items()}


def _pil(image: ImageInput) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(image.data)).convert("RGB")


def _png_b64(picture: Any) -> str:
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def _synthetic(width: int, height: int, key: tuple, alpha: bool = False) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(synth_png(width, height, "|".join(map(str, key)), alpha)))


def _region_mask(size: tuple[int, int]) -> Any:
    """The area a mask prompt 'finds': a central box, black (edit) on white (keep)."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", size, 255)
    w, h = size
    ImageDraw.Draw(mask).rectangle((w // 4, h // 4, 3 * w // 4 - 1, 3 * h // 4 - 1), fill=0)
    return mask


def _render(task: str, params: dict, images: dict[str, ImageInput], width: int, height: int, key: tuple) -> str:
    from PIL import Image, ImageOps

    if task == "TEXT_IMAGE":
        return _png_b64(_synthetic(width, height, key))
    if task == "COLOR_GUIDED_GENERATION":
        colors = [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in params["colors"]]
        gradient = Image.linear_gradient("L").resize((width, height)).rotate(90, expand=False)
        picture = ImageOps.colorize(gradient, colors[0], colors[-1] if len(colors) > 1 else colors[0])
        return _png_b64(Image.blend(picture, _synthetic(width, height, key).convert("RGB"), 0.2))
    if task == "IMAGE_VARIATION":
        source = _pil(images[MAIN_IMAGE[task]]).resize((width, height))
        return _png_b64(Image.blend(source, _synthetic(width, height, key).convert("RGB"), 0.35))
    if task == "BACKGROUND_REMOVAL":
        source = _pil(images[MAIN_IMAGE[task]]).convert("RGBA")
        alpha = Image.new("L", source.size, 255)
        quarter = source.size[0] // 4
        alpha.paste(0, (0, 0, quarter, source.size[1]))
        alpha.paste(0, (source.size[0] - quarter, 0, source.size[0], source.size[1]))
        source.putalpha(alpha)
        return _png_b64(source)
    source_image = images[MAIN_IMAGE[task]]
    source = _pil(source_image)
    paint = _synthetic(source.size[0], source.size[1], key).convert("RGB")
    if task in ("INPAINTING", "OUTPAINTING"):
        mask_input = images.get(next(k for k, v in MASKED_IMAGE.items() if v == MAIN_IMAGE[task]))
        edit = _pil(mask_input).convert("L") if mask_input is not None else _region_mask(source.size)
        if task == "INPAINTING":
            edit = ImageOps.invert(edit)  # inpainting repaints the black area; paste() uses white
        return _png_b64(Image.composite(paint, source, edit))
    # VIRTUAL_TRY_ON: the garment area comes from the reference image
    garment = _pil(images["virtualTryOnParams.referenceImage"]).resize(source.size)
    area = ImageOps.invert(_tryon_mask(source_image, params))
    return _png_b64(Image.composite(garment, source, area))


def _tryon_mask(source: ImageInput, params: dict) -> Any:
    if params["maskType"] == "IMAGE":
        return _pil(load(params["imageBasedMask"]["maskImage"], "mask")[0]).convert("L")
    return _region_mask((source.info.width, source.info.height))
