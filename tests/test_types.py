"""The attrs types and the cattrs converter."""

from __future__ import annotations

import pytest

from gesso.errors import InvalidRequestError
from gesso.types import ImageData, ImageResponse, Size


def test_image_response_round_trips_and_omits_empty_extras():
    resp = ImageResponse(created=1, data=[ImageData(b64_json="abc")], model="m", cost=0.5)
    assert resp.to_dict() == {"created": 1, "data": [{"b64_json": "abc"}], "model": "m", "cost": 0.5}
    assert ImageResponse.from_dict(resp.to_dict()) == resp


def test_openai_responses_parse_and_unknown_keys_are_rejected():
    parsed = ImageResponse.from_dict({"created": 2, "data": [{"url": "https://x", "revised_prompt": "p"}]})
    assert parsed.data[0].url == "https://x" and parsed.cost is None
    with pytest.raises(InvalidRequestError) as info:
        ImageResponse.from_dict({"created": 2, "data": [{"b64": "x"}], "colour": "red"})
    assert sorted(map(str, info.value.violations)) == ["colour: unknown key", "data[0].b64: unknown key"]


@pytest.mark.parametrize(
    ("text", "size"), [("1024x768", Size(1024, 768)), (" 512 X 512 ", Size(512, 512)), ("64×32", Size(64, 32))]
)
def test_size_parsing(text, size):
    assert Size.parse(text) == size
    assert str(Size.parse(text)) == f"{size.width}x{size.height}"


@pytest.mark.parametrize("bad", ["1024", "axb", "1024x", 1024, None, "-5x5", "1.5x2"])
def test_bad_sizes_say_what_is_expected(bad):
    with pytest.raises(InvalidRequestError, match='size: must be "WIDTHxHEIGHT"'):
        Size.parse(bad)


def test_secrets_are_not_in_reprs():
    from gesso_bedrock.target import AwsCredentials

    creds = AwsCredentials(access_key_id="AKID", secret_access_key="s3cr3t", session_token="t0k3n")
    assert "s3cr3t" not in repr(creds) and "t0k3n" not in repr(creds)


def test_a_model_answers_to_its_routing_prefixes():
    from gesso.types import Model

    model = Model(id="painter-v1", family="x", aliases=["painter"], routing_prefixes=["us.", "eu."])
    assert model.routing_prefixes == ("us.", "eu.")
    assert model.ids == ("painter-v1", "painter", "us.painter-v1", "eu.painter-v1")


def test_profile_prefixes_is_a_deprecated_name_of_routing_prefixes():
    """A third party's plugin written for gesso 0.1 keeps working for one release, warned."""
    import attrs

    from gesso.types import Model

    with pytest.warns(DeprecationWarning, match="use Model.routing_prefixes") as caught:
        model = Model(id="painter-v1", family="x", profile_prefixes=("us.",))
    assert caught[0].filename == __file__  # the warning points at the plugin's line
    assert model == Model(id="painter-v1", family="x", routing_prefixes=("us.",))
    assert model.ids == ("painter-v1", "us.painter-v1")
    with pytest.warns(DeprecationWarning, match="use Model.routing_prefixes"):
        assert model.profile_prefixes == ("us.",)
    with pytest.raises(TypeError, match="routing_prefixes only"):
        Model(id="painter-v1", family="x", profile_prefixes=("us.",), routing_prefixes=("eu.",))
    assert attrs.evolve(model, id="painter-v2").ids == ("painter-v2", "us.painter-v2")  # no warning: the new name
    assert "routing_prefixes" in {f.name for f in attrs.fields(Model)} and "profile_prefixes" not in repr(model)
