"""image_edit and image_variation: every row of the tables of docs/edits-and-variations.md (the "Edits and
variations" page) is a test here, run on the emulator, so the table and the behaviour cannot drift apart."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path

import pytest

import gesso
from gesso import errors, operations
from helpers import mask as bw_mask
from helpers import picture

README = Path(__file__).resolve().parents[1] / "docs" / "edits-and-variations.md"
SIZE = 512


def rows() -> list[tuple[str, str, str, str]]:
    """The rows of every table in the "Edits and variations" page with the four columns
    model | operation | inputs | sent."""
    text = README.read_text()
    section = text.split("# Edits and variations", 1)[1].split("\n### ", 1)[0]
    found = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1] in ("edit", "variation"):
            found.append(tuple(cell.strip("`") for cell in cells))
    return found


def openai_mask(width: int = SIZE, height: int = SIZE, box=(100, 100, 300, 300)) -> bytes:
    """OpenAI's convention: an RGBA PNG, fully transparent inside ``box`` (the area to edit), opaque elsewhere."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (width, height), (10, 20, 30, 255))
    ImageDraw.Draw(image).rectangle(box, fill=(0, 0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def call_args(inputs: str) -> dict:
    """The kwargs of one table row's call, from its *inputs* cell."""
    kwargs: dict = {}
    for token in (t.strip() for t in inputs.split("+")):
        if token == "image":
            kwargs["image"] = picture(SIZE, SIZE)
        elif token == "2 images":
            kwargs["image"] = [picture(SIZE, SIZE), picture(SIZE, SIZE, (200, 60, 60))]
        elif token == "mask":
            kwargs["mask"] = openai_mask()
        elif token == "bw mask":
            kwargs["mask"] = bw_mask(SIZE, SIZE, (100, 100, 300, 300))
        elif token == "prompt":
            kwargs["prompt"] = "a red hat"
        elif "=" in token:
            name, value = token.split("=", 1)
            kwargs[name] = json.loads(value) if re.fullmatch(r"-?\d+(\.\d+)?|true|false", value) else value
        else:
            raise AssertionError(f"unknown input {token!r} in the README table")
    return kwargs


def field(body: dict, path: str):
    node = body
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


def check_sent(body: dict, sent: str) -> None:
    for claim in (c.strip() for c in sent.split(",")):
        claim = claim.split(" (", 1)[0].strip()  # a note in brackets explains, it is not checked
        if claim.startswith("no "):
            with pytest.raises(KeyError):
                field(body, claim[3:])
        elif "=" in claim:
            path, value = claim.split("=", 1)
            assert str(field(body, path)) == value, f"{path} in {json.dumps(body)[:300]}"
        else:
            field(body, claim)


@pytest.mark.parametrize("model, operation, inputs, sent", rows(), ids=lambda v: str(v)[:40])
def test_readme_row(model, operation, inputs, sent, aws, emulator):
    kwargs = call_args(inputs)
    run = gesso.image_edit if operation == "edit" else gesso.image_variation
    if sent.startswith("400"):
        with pytest.raises(errors.InvalidRequestError):
            run(f"bedrock/{model}", **kwargs, **aws)
        assert emulator.stats()["requests"] == 0, "nothing is sent for a call bound to fail"
        return
    response = run(f"bedrock/{model}", **kwargs, **aws)
    assert response.data
    check_sent(json.loads(emulator.requests[-1].body), sent)


def test_the_tables_have_rows():
    models = {row[0] for row in rows()}
    assert any("nova" in m for m in models) and any("titan" in m for m in models)
    assert any("stability" in m for m in models)


def test_openai_mask_is_converted_for_a_black_edit_family():
    converted, problems = operations.family_mask(openai_mask(), edit=operations.BLACK)
    assert not problems and converted.converted
    from helpers import pil

    colours = dict((colour, count) for count, colour in pil(converted.b64).getcolors())
    assert colours == {(0, 0, 0): 201 * 201, (255, 255, 255): SIZE * SIZE - 201 * 201}
    assert (converted.edit_pixels, converted.keep_pixels) == (201 * 201, SIZE * SIZE - 201 * 201)


def test_a_black_and_white_mask_is_sent_as_given():
    given = bw_mask(SIZE, SIZE, (0, 0, 10, 10))
    converted, problems = operations.family_mask(given, edit=operations.WHITE)
    assert not problems and not converted.converted
    import base64

    assert base64.b64decode(converted.b64) == given


def test_a_grey_mask_is_refused_naming_both_conventions():
    converted, problems = operations.family_mask(picture(64, 64, (128, 128, 128)), edit=operations.BLACK)
    assert converted is None
    assert "fully transparent" in problems[0].message and "black = edit" in problems[0].message


def test_async_forms(aws, emulator):
    async def both():
        return await asyncio.gather(
            gesso.aimage_variation("bedrock/amazon.nova-canvas-v1:0", picture(SIZE, SIZE), **aws),
            gesso.aimage_edit(
                "bedrock/amazon.nova-canvas-v1:0", picture(SIZE, SIZE), "a hat", mask=openai_mask(), **aws
            ),
        )

    variation, edit = asyncio.run(both())
    assert variation.data and edit.data
    assert {json.loads(r.body)["taskType"] for r in emulator.requests} == {"IMAGE_VARIATION", "INPAINTING"}


def test_a_file_object_is_read(aws, emulator):
    response = gesso.image_variation("bedrock/amazon.nova-canvas-v1:0", io.BytesIO(picture(SIZE, SIZE)), **aws)
    assert response.data


def test_no_image_is_one_clear_error(aws, emulator):
    with pytest.raises(errors.InvalidRequestError, match="image: is required"):
        gesso.image_variation("bedrock/amazon.nova-canvas-v1:0", None, **aws)
    assert emulator.stats()["requests"] == 0
