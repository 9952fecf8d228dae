"""Build and validate Titan Image Generator request bodies (v1 and v2).

The body layout is Nova's (``gesso_bedrock.taskbody``): ``taskType``, one params object, ``imageGenerationConfig``,
from nested, flat and OpenAI parameters in any mix. Titan's own rules: the size must be one of its table's
(width, height) pairs, for INPAINTING and OUTPAINTING too (``snap_size=True`` opts into the nearest allowed
size, reported on the response); text is 1-512 characters; input images are PNG or JPEG, at most 1408 pixels
on the long side and 5 MB; masks are black and white and the size of the image they mask. v2-only tasks and
fields on v1 are refused with an error naming v2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from gesso import inputs
from gesso.errors import Violation
from gesso.params import raise_for
from gesso.types import ImageRequest, PreparedRequest, Size
from gesso_bedrock import taskbody
from gesso_bedrock_titan import sizes
from gesso_bedrock_titan.models import V1, V2, V2_ONLY_FIELDS, V2_ONLY_TASKS, schema_v1, schema_v2

TASK_PARAMS = {
    "TEXT_IMAGE": "textToImageParams",
    "INPAINTING": "inPaintingParams",
    "OUTPAINTING": "outPaintingParams",
    "IMAGE_VARIATION": "imageVariationParams",
    "COLOR_GUIDED_GENERATION": "colorGuidedGenerationParams",
    "BACKGROUND_REMOVAL": "backgroundRemovalParams",
}
CONFIG = "imageGenerationConfig"
MAIN_IMAGE = {
    "INPAINTING": "inPaintingParams.image",
    "OUTPAINTING": "outPaintingParams.image",
    "BACKGROUND_REMOVAL": "backgroundRemovalParams.image",
    "IMAGE_VARIATION": "imageVariationParams.images[0]",
}
MASKED_IMAGE = {
    "inPaintingParams.maskImage": "inPaintingParams.image",
    "outPaintingParams.maskImage": "outPaintingParams.image",
}
#: Edit inputs: at most 1408 pixels on the long side and 5 MB (read by the request builder and the emulation)
LIMITS = inputs.ImageLimits(max_side=1408, max_bytes=5 * 1024 * 1024)

LAYOUT = taskbody.TaskLayout(
    schema=schema_v2,
    tasks=TASK_PARAMS,
    no_config=frozenset({"BACKGROUND_REMOVAL"}),
    # unlike Nova, INPAINTING and OUTPAINTING take width/height (AWS's Titan request templates list them and
    # its examples send 512x512): size is placed and checked against the table as for TEXT_IMAGE; without
    # one, the output takes the input image's size. BACKGROUND_REMOVAL sends no config at all.
    main_image=MAIN_IMAGE,
)


#: Edit tasks whose output takes the input image's size when no width and height are sent
INPUT_SIZED_EDITS = frozenset({"INPAINTING", "OUTPAINTING"})


def prepare(request: ImageRequest) -> PreparedRequest:
    request = _input_sized(request)
    placed = taskbody.place(request, LAYOUT, dict(request.params))
    v1 = request.model.id == V1
    if v1:
        early = _v2_only(placed)
        if early:
            raise_for(placed.problems + early, model=request.model_name)
    notes = _size_table(request, placed)
    body, images = taskbody.check(request, LAYOUT, placed, schema=schema_v1() if v1 else schema_v2(), rules=_rules)
    return taskbody.plan(LAYOUT, placed.task, body, images, warnings=notes)


def _input_sized(request: ImageRequest) -> ImageRequest:
    """An edit's ``size`` equal to its input image's is what INPAINTING and OUTPAINTING make without one: outside
    Titan's table it is honoured by sending no width and height. A size in the table is sent, as AWS's Titan
    templates send one; any other size meets the table."""
    size = request.size
    if size is None or sizes.allowed(size.width, size.height) or request.operation != "edit" or not request.images:
        return request
    if taskbody.operation_task(request, LAYOUT, request.params) not in INPUT_SIZED_EDITS:
        return request
    loaded, _ = inputs.load(request.images[0], "image")  # a bad image is named when it is placed
    if loaded is None or Size(loaded.info.width, loaded.info.height) != size:
        return request
    return attrs.evolve(request, size=None)


def _v2_only(placed: taskbody.Placed) -> list[Violation]:
    if placed.task in V2_ONLY_TASKS:
        return [Violation("taskType", f"{placed.task} needs {V2}; Titan v1 ({V1}) does not offer it")]
    found = []
    for field in V2_ONLY_FIELDS.get(placed.obj, ()):
        if placed.builder.get((placed.obj, field)) is not None:
            found.append(Violation(f"{placed.obj}.{field}", f"needs {V2}; Titan v1 ({V1}) has no image conditioning"))
    return found


def _size_table(request: ImageRequest, placed: taskbody.Placed) -> list[str]:
    """Titan makes only the sizes of its table (gesso's size rule: refused, or snapped with ``snap_size``)."""
    return taskbody.fit_size(
        request, LAYOUT, placed,
        refuses=lambda size: None if sizes.allowed(size.width, size.height) else "",
        near=lambda size: sizes.TABLE,
        what="a Titan size", allowed=sizes.listing(),
    )  # fmt: skip


def _rules(
    body: Mapping[str, Any], images: Mapping[str, tuple[inputs.ImageInput, str]], placed: taskbody.Placed
) -> list[Violation]:
    return image_rules(images)


def image_rules(images: Mapping[str, tuple[inputs.ImageInput, str]]) -> list[Violation]:
    """PNG or JPEG, at most 1408 px on the long side and 5 MB; masks black and white, the image's size."""
    return taskbody.image_rules(images, masked_image=MASKED_IMAGE, limits=LIMITS.check, opaque=False)
