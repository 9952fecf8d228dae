"""Build and check the Converse body of a Nova 2 Omni image call.

The body is what AWS's samples send (``S1``, ``S2``: see :mod:`gesso_bedrock_nova2.models`): one user message whose
content is the prompt as a text block, after the input image as an image block for an edit (``image_edit``); no
size field, since AWS documents none. A ``size`` asks for its aspect ratio in the system prompt
(``"Always generate images using 1:1 aspect ratio"``: the wording of the system prompt S2's first example carries,
commented out; S1's lab sends its own instructions as a system prompt too; S2's examples otherwise say the shape in
the user's prompt, "Make it square."); the user's prompt is sent as given. Only the aspect ratios S2 lists, at
most S2's 4 megapixels, are accepted, and the response reports the size the model made (read from the image).

Parameters: ``maxTokens``, ``temperature`` and ``topP`` (or ``inferenceConfig={...}``), and ``reasoningConfig``
(or ``additionalModelRequestFields={...}``), as the samples send them; nothing else. ``n`` images are ``n`` calls
(each answer holds one image), at most :data:`MAX_N`. ``quality``, ``style``, a ``mask``, more than one input
image, and a ``size`` on an edit are refused: AWS documents none of them for this model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gesso import family, inputs
from gesso.errors import InvalidRequestError, Violation
from gesso.params import short, unknown_parameter
from gesso.types import ImageRequest, PreparedRequest, Size
from gesso_bedrock_nova2.models import DEFAULT_RATIO, EDIT_MAX_PIXELS, MAX_PIXELS, SIZES, schema

WHAT = "Amazon Nova 2 Omni"
#: the most images (each one Converse call) one request may ask for: OpenAI's own bound on ``n``
MAX_N = 10
#: how far (relatively) a size's width/height may be from an aspect ratio of :data:`SIZES` and still ask for it:
#: S2's own sizes are not exactly their ratios (2704x1520 is 16:9 within 0.1%, 2352x1760 is 4:3 within 0.3%)
RATIO_TOLERANCE = 0.01
#: where each flat parameter goes in the body
NESTED = {
    "maxTokens": ("inferenceConfig", "maxTokens"),
    "temperature": ("inferenceConfig", "temperature"),
    "topP": ("inferenceConfig", "topP"),
    "reasoningConfig": ("additionalModelRequestFields", "reasoningConfig"),
}
OBJECTS = ("inferenceConfig", "additionalModelRequestFields")
#: GUIDE's multimodal page: images embedded in a request are PNG, JPEG, GIF or WebP, at most 25 MB. gesso sends
#: PNG, JPEG and WebP (it reads no GIF header, so it could not check one) and counts the 25 MB on the image as the
#: request carries it, base64, so that no image under the bound makes a request over it
MAX_IMAGE_BYTES = 25 * 1000 * 1000


def instruction(ratio: str) -> str:
    """The system prompt that asks for an aspect ratio: S2's wording (its first example's system prompt line)."""
    return f"Always generate images using {ratio} aspect ratio"


def ratio_of(size: Size) -> str | None:
    """The aspect ratio of :data:`SIZES` that ``size`` has (within :data:`RATIO_TOLERANCE`), or None."""
    for ratio in SIZES:
        width, height = (int(part) for part in ratio.split(":"))
        if abs(math.log((size.width / size.height) / (width / height))) <= RATIO_TOLERANCE:
            return ratio
    return None


ALLOWED_SIZES = ", ".join(f"{ratio} (made at {made})" for ratio, made in SIZES.items())


def prepare(request: ImageRequest) -> PreparedRequest:
    problems: list[Violation] = []
    editing = request.operation == "edit"
    if request.operation not in ("generate", "edit"):
        problems.append(Violation("operation", f"{WHAT} generates and edits images; it makes no variations"))
    body: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, value in request.params.items():
        if key in OBJECTS:
            if not isinstance(value, Mapping):
                problems.append(Violation(key, f"must be an object (got {short(value)})"))
                continue
            for name, item in value.items():
                _put(body, sources, (key, name), item, key, problems)
        elif key in NESTED:
            _put(body, sources, NESTED[key], value, key, problems)
        else:
            problems.append(unknown_parameter(key, [*NESTED, *OBJECTS], WHAT))
    if request.quality is not None:
        problems.append(Violation("quality", f"{WHAT} has no quality setting (AWS documents none); leave it out"))
    if request.style is not None:
        problems.append(Violation("style", f"{WHAT} has no style presets: describe the style in the prompt"))
    if request.mask is not None:
        problems.append(Violation("mask", f"{WHAT} edits by instruction: AWS documents no mask for it (an edit is one "
                                  "image and the text saying what to change); leave mask out"))  # fmt: skip
    n = request.n or 1
    if n > MAX_N:
        problems.append(Violation("n", f"must be at most {MAX_N} for {WHAT}: each image is one Converse call"))
    content: list[dict[str, Any]] = []
    notes: list[str] = []
    size: Size | None = None
    if editing:
        content, problem = _edit_image(request)
        problems += problem
        if request.size is not None:
            problems.append(Violation("size", f"an edit's output takes its input image's aspect ratio, at most "
                                      f"{EDIT_MAX_PIXELS:,} pixels (AWS documents no sizes for edits); leave size out "
                                      "and say any change of shape in the prompt"))  # fmt: skip
    elif request.size is not None:
        ratio = ratio_of(request.size)
        if request.size.width * request.size.height > MAX_PIXELS:
            problems.append(Violation("size", f"{request.size} is more than the {MAX_PIXELS:,} pixels {WHAT} makes "
                                      f"at most (AWS); the sizes it makes: {ALLOWED_SIZES}"))  # fmt: skip
        elif ratio is None:
            problems.append(Violation("size", f"{request.size} is not an aspect ratio {WHAT} is documented to make; "
                                      f"the sizes it makes: {ALLOWED_SIZES}"))  # fmt: skip
        else:
            body["system"] = [{"text": instruction(ratio)}]
            size = SIZES[ratio]
            if size != request.size:
                notes.append(f"size {request.size}: asked for aspect ratio {ratio} in the system prompt; {WHAT} makes "
                             f"{ratio} images at {size}")  # fmt: skip
    else:
        size = SIZES[DEFAULT_RATIO]
    if request.prompt is None or not request.prompt.strip():
        problems.append(Violation("prompt", f"is required for {WHAT}: the text that asks for the image"))
    else:
        content.append({"text": request.prompt})
    body = {"messages": [{"role": "user", "content": content}], **body}
    try:
        family.check(request, body, schema(), what=WHAT, problems=problems, sources=sources)
    except InvalidRequestError as exc:
        if any(v.path == "prompt" for v in exc.violations):  # the schema's echo of a missing prompt is noise
            kept = [v for v in exc.violations if not v.path.startswith("messages")]
            raise InvalidRequestError(kept, model=request.model_name) from None
        raise
    return PreparedRequest(bodies=[body] * n, task="edit" if editing else "generate", size=size, requested=n,
                           warnings=notes)  # fmt: skip


def _put(
    body: dict[str, Any], sources: dict[str, str], path: tuple[str, str], value: Any, given: str,
    problems: list[Violation],
) -> None:  # fmt: skip
    """Place one parameter; the same field given twice with different values is an error, never a choice."""
    home = body.setdefault(path[0], {})
    where = ".".join(path)
    if path[1] in home and home[path[1]] != value:
        problems.append(Violation(given, f"{where} is given twice, as {short(home[path[1]])} ({sources[where]}) and "
                                  f"{short(value)} ({given}); give it once"))  # fmt: skip
        return
    home[path[1]] = value
    sources[where] = given


def _edit_image(request: ImageRequest) -> tuple[list[dict[str, Any]], list[Violation]]:
    """The edit's image block (S1, S2: the image first, then the text), or why it cannot be made."""
    if len(request.images) != 1:
        return [], [Violation("image", f"{WHAT} edits one image at a time (AWS: 'a single image as input'); got "
                              f"{len(request.images)}")]  # fmt: skip
    image, problems = inputs.load(request.images[0], "image")  # a GIF is named in the refusal (see MAX_IMAGE_BYTES)
    if image is None:
        return [], problems
    if image.info.format not in ("png", "jpeg", "webp"):
        return [], [Violation("image", f"must be PNG, JPEG or WebP for {WHAT} (got {image.info.format})")]
    if len(image.b64) > MAX_IMAGE_BYTES:
        return [], [Violation("image", f"must be at most {MAX_IMAGE_BYTES:,} bytes as base64 in the request for {WHAT} "
                              f"(got {len(image.b64):,}: {len(image.data):,} bytes of image)")]  # fmt: skip
    return [{"image": {"format": image.info.format, "source": {"bytes": image.b64}}}], []
