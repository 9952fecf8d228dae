"""Emulated Titan Image Generator v1 and v2: each model's own schema (v1 rejects v2-only tasks and
fields the way a schema does), the size table with Bedrock's exact message, input image rules, and
plausible deterministic outputs for all six tasks (the shared flow is :mod:`gesso_bedrock.emulator.tasks`)."""

from __future__ import annotations

from typing import Any

from gesso.inputs import ImageInput
from gesso_bedrock.emulator import EmulatedCall, EmulatorError, edits, tasks
from gesso_bedrock_titan import sizes
from gesso_bedrock_titan.request import LAYOUT, MAIN_IMAGE, TASK_PARAMS, image_rules

BLOCKED_OUTPUT = (
    "This request has been blocked by our content filters because the generated image(s) may conflict with "
    "our AUP or AWS Responsible AI Policy. Please try again."
)


def _check_size(width: int, height: int) -> None:
    if not sizes.allowed(width, height):
        raise EmulatorError.validation(
            f"400 Bad Request: Value of (width, height) is not valid. Given: ({width}, {height})."
        )


def _returned_mask(task: str, params: dict[str, Any], images: dict[str, ImageInput]) -> str | None:
    if not params.get("returnMask"):
        return None
    given = images.get(f"{TASK_PARAMS[task]}.maskImage")
    if given is not None:
        return given.b64
    main = images[MAIN_IMAGE[task]]
    return edits.png_b64(edits.region_mask((main.info.width, main.info.height)))


TITAN = tasks.TaskEmulation(
    layout=LAYOUT,
    check_size=_check_size,
    image_rules=image_rules,
    blocked_input=(
        "This request has been blocked by our content filters. Please adjust your text prompt to submit a new request."
    ),
    blocked_all=BLOCKED_OUTPUT,
    blocked_some=BLOCKED_OUTPUT,
    default_seed=42,
    success_extra={"error": None},
    returned_mask=_returned_mask,
)


def emulate(call: EmulatedCall) -> dict[str, Any]:
    return tasks.emulate(call, TITAN)
