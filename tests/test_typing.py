"""Types: the SDK's entry points name OpenAI's fields and the call options as typed keyword parameters (an IDE
completes them; a type checker flags a wrong type), with the same checks at run time as before; and every
distribution ships ``py.typed``."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest

import gesso
from gesso import api, options
from gesso.errors import InvalidRequestError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINTS = [
    gesso.image_generation, gesso.aimage_generation, gesso.image_edit, gesso.aimage_edit, gesso.image_variation,
    gesso.aimage_variation, api.quote, api.prepare,
]  # fmt: skip
NOVA = "bedrock/amazon.nova-canvas-v1:0"
SD35 = "bedrock/stability.sd3-5-large-v1:0"  # a model whose body has its own output_format
AWS = {"aws_region_name": "us-east-1"}


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda f: f.__name__)
def test_every_entry_point_names_the_call_options_with_types(entry):
    parameters = inspect.signature(entry).parameters
    hints = typing.get_type_hints(entry)  # every annotation resolves at run time too (the Literal aliases)
    reference = typing.get_type_hints(gesso.image_generation)
    for name in options.NAMED_KWARGS:  # each entry point spells its signature out: the same names, types, defaults
        parameter = parameters[name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, name
        assert parameter.default is options.NOT_GIVEN, name
        assert hints[name] == reference[name], name
    assert [p.name for p in parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD] == ["params"]
    assert hints["params"] is typing.Any  # provider options and the model's own parameters
    assert hints["untrusted"] == gesso.Untrusted | None


def test_the_literal_types_are_the_values_gesso_checks():
    hints = typing.get_type_hints(gesso.image_generation)

    def values(name: str) -> tuple[object, ...]:  # Literal[...] | None
        literal, none = typing.get_args(hints[name])
        assert none is type(None)
        return typing.get_args(literal)

    assert values("response_format") == options.RESPONSE_FORMATS == ("b64_json", "url")
    assert values("background") == options.BACKGROUNDS and values("moderation") == options.MODERATIONS
    assert values("output_format") == ("png", "jpeg", "webp") and values("input_fidelity") == ("high", "low")
    assert hints["n"] == int | None and hints["timeout"] == float | None


def test_a_named_option_left_out_is_not_part_of_the_call_and_none_is_a_value():
    """As when every kwarg came in ``**kwargs``: None is checked as given (snap_size must be a bool; a model
    with its own output_format refuses None), and a named option the caller left out is absent."""
    assert api.quote(NOVA, "an otter", **AWS) == api.quote(NOVA, "an otter", **AWS, **{})
    with pytest.raises(InvalidRequestError, match=r"snap_size: must be true or false \(got None\)"):
        api.quote(NOVA, "an otter", snap_size=None, **AWS)
    with pytest.raises(InvalidRequestError, match=r"output_format: must be one of: jpeg, png, webp \(got None\)"):
        api.quote(SD35, "an otter", output_format=None, **AWS)
    assert api.quote(SD35, "an otter", **AWS) is not None


def test_named_and_dict_kwargs_prepare_the_same_call():
    named = api.prepare(NOVA, "an otter", size="512x512", n=2, quality="hd", seed=3, **AWS)
    spread = api.prepare(NOVA, "an otter", **{"size": "512x512", "n": 2, "quality": "hd", "seed": 3, **AWS})
    assert named.prepared == spread.prepared and named.request.params == spread.request.params
    assert named.request.n == 2 and str(named.request.size) == "512x512" and api.price(named) == api.price(spread)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": "two"}, "n: must be a positive integer"),
        ({"response_format": "png"}, "response_format: must be one of: b64_json, url"),
        ({"timeout": -1}, "timeout: must be a positive number of seconds"),
        ({"background": "clear"}, "background: must be one of: auto, opaque, transparent"),
    ],
)
def test_typed_keywords_are_hints_the_run_time_checks_stay(kwargs, message):
    with pytest.raises(InvalidRequestError, match=message):
        gesso.image_generation(NOVA, "an otter", **kwargs, **AWS)


SNIPPET = """
    import gesso
    from gesso.types import ImageResponse

    async def main() -> None:
        await gesso.aimage_edit("bedrock/amazon.titan-image-generator-v2:0", b"png", "a hat", mask=b"m", n=1)

    ok: ImageResponse = gesso.image_generation(
        model="bedrock/amazon.nova-canvas-v1:0", prompt="A cute baby sea otter", size="1024x1024", n=2, timeout=30,
        response_format="url", background="opaque", snap_size=True, cfgScale=7, aws_region_name="us-east-1",
    )
    gesso.image_variation("bedrock/amazon.titan-image-generator-v2:0", b"png", prompt="a fox", output_format="jpeg")
    gesso.image_generation(model="m", prompt="p", n="two")  # flagged
    gesso.image_generation(model="m", prompt="p", response_format="png")  # flagged
    gesso.image_generation(model="m", prompt="p", timeout="30s")  # flagged
"""


def test_mypy_checks_a_call_of_the_sdk(tmp_path):
    """mypy (strict) on a snippet: a call with OpenAI's fields, gesso's options and provider parameters
    type-checks; a wrong type for a named keyword is flagged, line by line. Under 2 s with a cold cache."""
    pytest.importorskip("mypy")
    source = textwrap.dedent(SNIPPET).lstrip()
    (tmp_path / "snippet.py").write_text(source)
    flagged = [f"snippet.py:{n}" for n, line in enumerate(source.splitlines(), 1) if line.endswith("# flagged")]
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"),
         "--config-file", "", "snippet.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    errors = sorted(line.split(": error: ")[0] for line in run.stdout.splitlines() if ": error: " in line)
    assert errors == flagged and len(flagged) == 3, run.stdout + run.stderr
    assert 'Argument "n" to "image_generation" has incompatible type "str"; expected "int | None"' in run.stdout


# -- py.typed in every distribution ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "directory", [ROOT / "core", *sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))],
    ids=lambda p: p.name,
)  # fmt: skip
def test_every_distribution_ships_py_typed(directory):
    """Each package holds ``py.typed`` and its distribution declares ``Typing :: Typed``; the wheels carry
    it (tests/test_packaging.py: the classifier exactly when the wheel holds a py.typed)."""
    project = tomllib.loads((directory / "pyproject.toml").read_text())
    (package,) = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert (directory / package / "py.typed").is_file()
    assert "Typing :: Typed" in project["project"]["classifiers"]
