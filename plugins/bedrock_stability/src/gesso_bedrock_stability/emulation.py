"""Emulated Stability models on Bedrock: the same schemas and image rules as the client, Bedrock's
response shapes, and plausible deterministic images.

- SDXL: ``{"result": "success", "artifacts": [{"seed", "base64", "finishReason"}]}``; a filtered output
  comes back blurred with ``CONTENT_FILTERED``, as Bedrock does; a filtered prompt is ``invalid_prompts``.
- SD3/SD3.5/Ultra/Core and the services: ``{"seeds", "finish_reasons", "images"}``; filtered prompts and
  outputs are 200 answers with a ``Filter reason``. Seed 0 or none means random: the emulator derives one.
- Image-to-image (SD3/SD3.5 with mode image-to-image or an image and no mode, as AWS's example sends it;
  Ultra with an image and no mode) is inferred from ``image``, as Bedrock does.
- Outputs: text-to-image at the aspect ratio's ~1 MP size; image-to-image, control and style services at
  the input's size; upscales 4x (creative and conservative capped at 4096 px on the long side); outpaint
  extends the canvas; inpaint and erase repaint the mask's white area; remove-background is transparent.
"""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

from gesso.inputs import ImageInput
from gesso_bedrock.emulator import EmulatedCall, EmulatorError, edits
from gesso_bedrock_stability import common, models, sdxl

PROMPT_FILTERED = {"finish_reasons": ["Filter reason: prompt"]}


def emulate(call: EmulatedCall) -> dict[str, Any]:
    call.validate()
    if call.model.family == models.SDXL:
        return _sdxl(call)
    if call.model.family == models.V2:
        return _v2(call)
    return _service(call)


def _seed(body: dict[str, Any], key: tuple[Any, ...], top: int) -> int:
    given = body.get("seed")
    if given:
        return int(given)
    return int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:4], "big") % top + 1


def _images(call: EmulatedCall, limits: str) -> dict[str, ImageInput]:
    found = call.decode_images()
    problems = common.image_rules(found, limits)
    if problems:
        raise EmulatorError.validation(f"Invalid input image: {problems[0]}.")
    return {where: image for where, (image, _) in found.items()}


def _encode(png_b64: str, fmt: str) -> str:
    if fmt == "png":
        return png_b64
    from PIL import Image

    picture = Image.open(io.BytesIO(base64.b64decode(png_b64))).convert("RGB")
    out = io.BytesIO()
    picture.save(out, format={"jpeg": "JPEG", "webp": "WEBP"}[fmt])
    return base64.b64encode(out.getvalue()).decode("ascii")


# -- SDXL -------------------------------------------------------------------------------------------------


def _sdxl(call: EmulatedCall) -> dict[str, Any]:
    body = call.body
    if "width" in body or "height" in body:
        pair = (body.get("width"), body.get("height"))
        if pair not in sdxl.allowed_sizes(call.model.id):
            listing = ", ".join(f"{w}x{h}" for w, h in sdxl.allowed_sizes(call.model.id))
            raise EmulatorError.validation(f"Invalid dimensions ({pair[0]}, {pair[1]}): supported sizes are {listing}.")
    images = _images(call, "sdxl")
    texts = [p.get("text") for p in body["text_prompts"]]
    verdict = call.moderation(*texts)
    if verdict == "input":
        raise EmulatorError.validation("invalid_prompts")
    key = (call.model.id, *texts, body.get("steps"), body.get("cfg_scale"))
    seed = _seed(body, key, sdxl.SEED_MAX)
    init = images.get("init_image")
    prompt = texts[0] if texts else None
    if init is not None and "mask_image" in images:
        edit_black = body["mask_source"] == "MASK_IMAGE_BLACK"
        picture = edits.repaint(init, images["mask_image"], (*key, seed), edit_black=edit_black, prompt=prompt)
    elif init is not None:
        picture = edits.variation(init, init.info.width, init.info.height, (*key, seed), prompt)
    else:
        picture = edits.generate(body.get("width", 1024), body.get("height", 1024), (*key, seed), prompt)
    if verdict == "output" or (verdict == "some" and seed % 2 == 0):
        return {
            "result": "success",
            "artifacts": [{"seed": seed, "base64": _blur(picture), "finishReason": "CONTENT_FILTERED"}],
        }
    return {"result": "success", "artifacts": [{"seed": seed, "base64": picture, "finishReason": "SUCCESS"}]}


def _blur(png_b64: str) -> str:
    from PIL import Image, ImageFilter

    picture = Image.open(io.BytesIO(base64.b64decode(png_b64))).filter(ImageFilter.GaussianBlur(24))
    return edits.png_b64(picture)


# -- SD3, SD3.5, Ultra, Core --------------------------------------------------------------------------------


def _answer(body: dict[str, Any], key: tuple[Any, ...], render: Any, verdict: str | None) -> dict[str, Any]:
    if verdict == "input":
        return PROMPT_FILTERED
    seed = _seed(body, key, 4294967294)
    if verdict == "output" or (verdict == "some" and seed % 2 == 0):
        return {"seeds": [seed], "finish_reasons": ["Filter reason: output image"]}
    return {
        "seeds": [seed],
        "finish_reasons": [None],
        "images": [_encode(render((*key, seed)), body.get("output_format", "png"))],
    }


def _v2(call: EmulatedCall) -> dict[str, Any]:
    body = call.body
    images = _images(call, "sd3")
    verdict = call.moderation(body.get("prompt"), body.get("negative_prompt"))
    prompt = body.get("prompt")
    key = (call.model.id, prompt, body.get("negative_prompt"), body.get("mode"))
    if "image" in body:  # the schema allows it only for image-to-image: mode image-to-image, or no mode
        source = images["image"]
        size = (source.info.width, source.info.height)
        return _answer(body, key, lambda k: edits.variation(source, *size, k, prompt), verdict)
    width, height = common.RATIO_SIZES[body.get("aspect_ratio", "1:1")]
    return _answer(body, key, lambda k: edits.generate(width, height, k, prompt), verdict)


# -- Image Services -------------------------------------------------------------------------------------------


def _service(call: EmulatedCall) -> dict[str, Any]:
    body = call.body
    service = models.SERVICE_MODELS[call.model.id][0]
    limits = service if service in ("creative-upscale", "fast-upscale") else "standard"
    images = _images(call, limits)
    verdict = call.moderation(body.get("prompt"), body.get("search_prompt"), body.get("select_prompt"))
    key = (call.model.id, body.get("prompt"), *(hashlib.sha256(i.data).hexdigest()[:12] for i in images.values()))
    return _answer(body, key, lambda k: _render_service(service, body, images, k), verdict)


def _render_service(service: str, body: dict[str, Any], images: dict[str, ImageInput], key: tuple[Any, ...]) -> str:
    from PIL import Image

    source = images.get("image") or images.get("init_image")
    assert source is not None  # every service's schema requires an input image, and call.validate() checked it
    width, height = source.info.width, source.info.height
    prompt = body.get("prompt")
    if service.endswith("upscale"):
        factor = 4.0 if service == "fast-upscale" else min(4.0, 4096 / max(width, height))
        picture = edits.pil(source).resize((round(width * factor), round(height * factor)))
        return edits.png_b64(picture)
    if service in ("inpaint", "erase-object"):
        return edits.repaint(source, images.get("mask"), key, edit_black=False, prompt=prompt)
    if service in ("search-recolor", "search-replace"):
        return edits.repaint(source, None, key, edit_black=True, prompt=prompt)
    if service == "outpaint":
        left, right, up, down = (body.get(side, 0) for side in ("left", "right", "up", "down"))
        canvas = edits.synthetic(width + left + right, height + up + down, key, prompt=prompt).convert("RGB")
        canvas.paste(edits.pil(source), (left, up))
        return edits.png_b64(canvas)
    if service == "remove-background":
        return edits.remove_background(source)
    if service == "style-guide":
        w, h = common.RATIO_SIZES[body.get("aspect_ratio", "1:1")]
        return edits.variation(source, w, h, key, prompt)
    if service == "style-transfer":
        blend = Image.blend(edits.pil(source), edits.pil(images["style_image"]).resize((width, height)), 0.5)
        return edits.png_b64(blend)
    return edits.generate(
        width, height, key, prompt
    )  # control-sketch, control-structure: a new image on the input's lines
