"""Emulated Titan Image Generator v1 and v2: each model's own schema (v1 rejects v2-only tasks and
fields the way a schema does), the size table with Bedrock's exact message, input image rules, and
plausible deterministic outputs for all six tasks (shared with Nova: ``gesso.emulator.edits``)."""

from __future__ import annotations

import hashlib
from typing import Any

from gesso.emulator import EmulatedCall, EmulatorError, edits
from gesso_bedrock_titan import sizes
from gesso_bedrock_titan.request import CONFIG, MAIN_IMAGE, TASK_PARAMS, image_rules

BLOCKED_INPUT = (
    "This request has been blocked by our content filters. Please adjust your text prompt to submit a new request."
)
BLOCKED_OUTPUT = (
    "This request has been blocked by our content filters because the generated image(s) may conflict with "
    "our AUP or AWS Responsible AI Policy. Please try again."
)
DEFAULT_SEED = 42


def emulate(call: EmulatedCall) -> dict:
    call.validate()
    body = call.body
    task = body["taskType"]
    params = body[TASK_PARAMS[task]]
    config = body.get(CONFIG, {})
    if "width" in config and not sizes.allowed(config["width"], config["height"]):
        raise EmulatorError.validation(
            f"400 Bad Request: Value of (width, height) is not valid. Given: ({config['width']}, {config['height']})."
        )
    found = call.decode_images()
    problems = image_rules(found)
    if problems:
        raise EmulatorError.validation(f"Invalid input image: {problems[0]}.")
    images = {where: image for where, (image, _) in found.items()}

    verdict = call.moderation(params.get("text"), params.get("negativeText"), params.get("maskPrompt"))
    if verdict == "input":
        raise EmulatorError.validation(BLOCKED_INPUT)
    main = images.get(MAIN_IMAGE.get(task, ""))
    if "width" in config:
        width, height = config["width"], config["height"]
    elif main is not None:
        width, height = main.info.width, main.info.height
    else:
        width, height = 1024, 1024
    count = 1 if task == "BACKGROUND_REMOVAL" else config.get("numberOfImages", 1)
    seed = config.get("seed", DEFAULT_SEED)
    key = (
        call.model.id,
        task,
        params.get("text"),
        seed,
        *(hashlib.sha256(i.data).hexdigest()[:12] for i in images.values()),
    )
    outputs = [_render(task, params, images, width, height, (*key, i)) for i in range(count)]
    if verdict == "output" or (verdict == "some" and count == 1):
        return {"images": [], "error": BLOCKED_OUTPUT}
    if verdict == "some":
        return {"images": outputs[: count // 2], "error": BLOCKED_OUTPUT}
    answer: dict[str, Any] = {"images": outputs, "error": None}
    if params.get("returnMask"):
        answer["maskImage"] = _mask(images, task)
    return answer


def _render(task: str, params: dict, images: dict, width: int, height: int, key: tuple) -> str:
    main = images.get(MAIN_IMAGE.get(task, ""))
    if task == "TEXT_IMAGE":
        return edits.generate(width, height, key)
    if task == "COLOR_GUIDED_GENERATION":
        return edits.color_guided(params["colors"], width, height, key)
    if task == "IMAGE_VARIATION":
        return edits.variation(main, width, height, key)
    if task == "BACKGROUND_REMOVAL":
        return edits.remove_background(main)
    mask = images.get(f"{TASK_PARAMS[task]}.maskImage")
    # Titan masks: black (0,0,0) is inside the mask; inpainting repaints it, outpainting the outside
    return edits.repaint(main, mask, key, edit_black=task == "INPAINTING")


def _mask(images: dict, task: str) -> str:
    given = images.get(f"{TASK_PARAMS[task]}.maskImage")
    if given is not None:
        return given.b64
    main = images[MAIN_IMAGE[task]]
    return edits.png_b64(edits.region_mask((main.info.width, main.info.height)))
