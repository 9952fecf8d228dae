"""Emulation of Amazon task-body models (Nova Canvas, Titan): one flow, the families' differences passed in.

The flow: validate the body with the model's schema, check the requested size and the input images,
apply the emulated content filter, render ``numberOfImages`` deterministic outputs for the task (generic
tasks here, others through ``render_other``), and answer ``{"images": [...], "error": ...}``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from gesso.errors import Violation
from gesso_bedrock.emulator import EmulatedCall, EmulatorError, edits
from gesso_bedrock.taskbody import TaskLayout


@attrs.frozen(kw_only=True)
class TaskEmulation:
    """What differs between families: the size check, the image rules, the filter messages, the default
    seed, extra fields on success, renderers for family-only tasks, and a returned mask."""

    layout: TaskLayout
    check_size: Callable[[int, int], None]
    image_rules: Callable[[Mapping[str, Any]], list[Violation]]
    blocked_input: str
    blocked_all: str
    blocked_some: str
    default_seed: int
    success_extra: Mapping[str, Any] = attrs.field(factory=dict)
    render_other: Callable[..., str] | None = None
    returned_mask: Callable[[str, dict[str, Any], dict[str, Any]], str | None] | None = None


def emulate(call: EmulatedCall, how: TaskEmulation) -> dict[str, Any]:
    call.validate()
    layout = how.layout
    body = call.body
    task = body["taskType"]
    params = body[layout.tasks[task]]
    config = body.get(layout.config, {})
    if "width" in config:
        how.check_size(config["width"], config["height"])
    found = call.decode_images()
    problems = how.image_rules(found)
    if problems:
        raise EmulatorError.validation(f"Invalid input image: {problems[0]}.")
    images = {where: image for where, (image, _) in found.items()}

    verdict = call.moderation(params.get("text"), params.get("negativeText"), params.get("maskPrompt"))
    if verdict == "input":
        raise EmulatorError.validation(how.blocked_input)
    main = images.get(layout.main_image.get(task, ""))
    if "width" in config:
        width, height = config["width"], config["height"]
    elif main is not None:
        width, height = main.info.width, main.info.height
    else:
        width, height = layout.default_size.width, layout.default_size.height
    count = 1 if task in layout.no_config else config.get("numberOfImages", 1)
    seed = config.get("seed", how.default_seed)
    key = (
        call.model.id,
        task,
        params.get("text"),
        seed,
        *(hashlib.sha256(i.data).hexdigest()[:12] for i in images.values()),
    )
    outputs = [_render(how, task, params, images, main, width, height, (*key, index)) for index in range(count)]
    if verdict == "output" or (verdict == "some" and count == 1):
        return {"images": [], "error": how.blocked_all}
    if verdict == "some":
        return {"images": outputs[: count // 2], "error": how.blocked_some}
    answer: dict[str, Any] = {"images": outputs, **how.success_extra}
    mask = how.returned_mask(task, params, images) if how.returned_mask else None
    if mask is not None:
        answer["maskImage"] = mask
    return answer


def _render(
    how: TaskEmulation,
    task: str,
    params: dict[str, Any],
    images: dict[str, Any],
    main: Any,
    width: int,
    height: int,
    key: tuple[Any, ...],
) -> str:
    prompt = params.get("text")
    if task == "TEXT_IMAGE":
        return edits.generate(width, height, key, prompt)
    if task == "COLOR_GUIDED_GENERATION":
        return edits.color_guided(params["colors"], width, height, key, prompt)
    if task == "IMAGE_VARIATION":
        return edits.variation(main, width, height, key, prompt)
    if task == "BACKGROUND_REMOVAL":
        return edits.remove_background(main)
    if task in ("INPAINTING", "OUTPAINTING"):
        # masks: black (0,0,0) is inside; inpainting repaints it, outpainting repaints the outside
        mask = images.get(f"{how.layout.tasks[task]}.maskImage")
        painted = edits.repaint(main, mask, key, edit_black=task == "INPAINTING", prompt=prompt)
        if (width, height) == (main.info.width, main.info.height):
            return painted
        return _resized(painted, width, height)  # a size asked for (Titan takes one for edits)
    if how.render_other is None:
        raise EmulatorError.validation(f"taskType {task} is not supported by this model")
    return how.render_other(task, params, images, main, key)


def _resized(png_b64: str, width: int, height: int) -> str:
    import base64
    import io

    from PIL import Image

    picture = Image.open(io.BytesIO(base64.b64decode(png_b64)))
    return edits.png_b64(picture.resize((width, height)))
