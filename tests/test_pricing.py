"""Deployment prices (``gesso.pricing``): a call given ``prices=`` (the SDK, ``gesso cost``, ``gesso batch``) or
made through a proxy deployment whose ``model_info`` prices it is quoted, budgeted, recorded and answered at
that price, and the response says so (``pricing``); a price that does not fit the model is refused, naming the
model's price classes; a model with no price reports its cost as unknown, never 0, once warned."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
from test_replicas import MASTER, call, started

import gesso
from gesso import api, pricing
from gesso.errors import InvalidRequestError
from gesso.types import Model, PriceTable

NOVA = "bedrock/amazon.nova-canvas-v1:0"
CLASSES = {"standard_1024": 0.01, "premium_1024": 0.02, "standard_2048": 0.03, "premium_2048": 0.04}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def test_a_call_is_quoted_and_answered_at_the_price_it_is_given(aws):
    assert api.quote(NOVA, "a", size="1024x1024", **aws) == 0.04  # the public table
    assert api.quote(NOVA, "a", size="1024x1024", n=3, prices={"output_cost_per_image": 0.025}, **aws) == 0.075
    by_class = {"output_cost_per_image": CLASSES}
    assert api.quote(NOVA, "a", size="2048x1024", quality="premium", prices=by_class, **aws) == 0.04
    assert api.quote(NOVA, "a", size="1024x1024", prices=by_class, **aws) == 0.01

    public = gesso.image_generation(NOVA, "a lighthouse", size="320x320", **aws)
    assert (public.cost, public.pricing) == (0.04, "public") and public.to_dict()["pricing"] == "public"
    ours = gesso.image_generation(NOVA, "a lighthouse", size="320x320", n=2, prices={"output_cost_per_image": 0.5},
                                  **aws)  # fmt: skip
    assert (ours.cost, ours.pricing, len(ours.data)) == (1.0, "deployment", 2)


@pytest.mark.parametrize(
    ("prices", "says"),
    [
        ({"output_cost_per_image": {"standard_1024": 0.01}}, "must price each of amazon.nova-canvas-v1:0's classes "
         "(standard_1024, premium_1024, standard_2048, premium_2048): missing premium_1024, premium_2048, "
         "standard_2048"),
        ({"output_cost_per_image": {**CLASSES, "ultra": 1}}, "not a class of it: ultra"),
        ({"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-5}, "is priced per image: give "
         "output_cost_per_image"),
        ({"output_cost_per_image": -0.01}, "must be a USD amount >= 0"),
        ({"output_cost_per_image": float("nan")}, "must be a USD amount >= 0"),
        ({"output_cost_per_image": True}, "must be a USD amount >= 0"),
        ({"input_cost_per_image": 0.01}, "unknown (prices take: output_cost_per_image, input_cost_per_token, "
         "output_cost_per_token)"),
        ({"output_cost_per_image": 0.01, "output_cost_per_token": 1e-5}, "not both"),
        ({}, "must be a mapping of one or more of"),
        ("0.04", "must be a mapping of one or more of"),
    ],
)  # fmt: skip
def test_a_price_that_does_not_fit_the_model_is_refused_before_anything_is_sent(aws, prices, says):
    with pytest.raises(InvalidRequestError) as caught:
        gesso.image_generation(NOVA, "a lighthouse", size="320x320", prices=prices, **aws)
    assert says in str(caught.value) and caught.value.violations[0].path.startswith("prices")


def test_a_token_priced_model_takes_token_prices_and_one_without_a_price_is_unknown():
    table = Model(id="acme.per-image", family="acme", prices=PriceTable({"quality": ("standard", "hd")},
                                                                       {"standard": 0.02, "hd": 0.05}))  # fmt: skip
    fitted, wrong = pricing.apply(table, pricing.parse({"output_cost_per_image": 0.03})[0])
    assert not wrong and dict(fitted.prices) == {"standard": 0.03, "hd": 0.03} and fitted.prices.price(quality="hd")
    tokens = Model(id="acme.omni", family="acme", priced_per="token")
    assert not pricing.has_price(tokens)
    fitted, wrong = pricing.apply(
        tokens, pricing.parse({"input_cost_per_token": 1e-6, "output_cost_per_token": 4e-5})[0]
    )
    assert not wrong and fitted.token_prices == {"input": 1e-6, "output": 4e-5} and pricing.has_price(fitted)
    _, wrong = pricing.apply(tokens, pricing.parse({"input_cost_per_token": 1e-6})[0])
    assert wrong[0].path == "prices.output_cost_per_token" and "required" in wrong[0].message
    flat, wrong = pricing.apply(tokens, pricing.parse({"output_cost_per_image": 0.1})[0])
    assert not wrong and flat.priced_per == "image" and dict(flat.prices) == {"image": 0.1}  # a flat rate an image
    _, wrong = pricing.apply(tokens, pricing.parse({"output_cost_per_image": {"standard": 0.1}})[0])
    assert "has no price classes" in wrong[0].message
    with pytest.warns(pricing.UnpricedModelWarning, match="acme.omni has no public price") as seen:
        pricing.warn_unpriced(tokens)
        pricing.warn_unpriced(tokens)  # once a model
    assert len(seen) == 1


def test_gesso_cost_takes_your_price(tmp_path):
    def cost(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gesso", "cost", NOVA, "--size", "1024x1024", "--json", *args],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    public, ours = cost("-n", "2"), cost("-n", "2", "--prices", '{"output_cost_per_image": 0.025}')
    assert json.loads(public.stdout) == {"model": NOVA, "n": 2, "cost": 0.08, "pricing": "public"}
    assert json.loads(ours.stdout) == {"model": NOVA, "n": 2, "cost": 0.05, "pricing": "deployment"}
    refused = cost("--prices", '{"output_cost_per_image": {"standard_1024": 0.01}}')
    assert refused.returncode != 0 and "missing premium_1024" in refused.stderr
    bad = cost("--prices", "0.04")
    assert bad.returncode == 2 and "--prices: a JSON object" in bad.stderr


@pytest.mark.slow  # starts a subprocess
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_budget_that_covers_three_images_at_the_deployment_price_gets_exactly_three(database_url, aws, tmp_path):
    """The deployment prices Nova Canvas at 0.5 USD an image (model_info.output_cost_per_image); a key with a
    1.5 USD budget makes 3 images, then is refused; each answer says its cost and which price applied."""
    with started(database_url, aws, tmp_path, names=("a",), model_info={"output_cost_per_image": 0.5}) as replicas:
        url = replicas[0]
        status, _, made = call(url, "POST", "/key/generate", key=MASTER, body={"key_alias": "three", "max_budget": 1.5})
        assert status == 200, made
        key, answers = made["key"], []
        body = {"model": "nova", "prompt": "a lighthouse", "size": "320x320"}
        for _ in range(5):
            answers.append(call(url, "POST", "/v1/images/generations", key=key, body=body))
        assert [status for status, _, _ in answers] == [200, 200, 200, 429, 429]
        for _, headers, answer in answers[:3]:
            assert answer["cost"] == 0.5 and answer["pricing"] == "deployment"
            assert headers["x-gesso-response-cost"] == "0.500000"
        assert answers[3][2]["error"]["code"] == "budget_exceeded" and "this call costs 0.5000" in str(answers[3][2])
        info = call(url, "GET", "/key/info?key=" + key, key=MASTER)[2]
        assert info["info"]["spend"] == pytest.approx(1.5)
        rows = call(url, "GET", "/spend/logs?limit=100", key=MASTER)[2]
        assert sorted(row["cost"] for row in rows if row["status"] == "success") == [0.5, 0.5, 0.5]


def test_a_proxy_deployment_price_is_checked_when_the_config_is_read():
    from gesso.proxy import config as proxy_config

    def parsed(info: dict) -> object:
        return proxy_config.parse({"model_list": [{"model_name": "canvas", "model_info": info,
                                                   "litellm_params": {"model": NOVA}}]})  # fmt: skip

    config = parsed({"output_cost_per_image": {"standard_1024": 0.01, "premium_1024": 0.02, "standard_2048": 0.03,
                                               "premium_2048": 0.04}})  # fmt: skip
    assert config.deployments[0].params["prices"]["output_cost_per_image"]["premium_2048"] == 0.04
    with pytest.raises(proxy_config.ConfigError, match=r"model_list\[0\]\.model_info\.output_cost_per_image: must"):
        parsed({"output_cost_per_image": "cheap"})
    wrong = parsed({"output_cost_per_image": {"standard_1024": 0.01}})
    with pytest.raises(proxy_config.ConfigError, match=r"model_list\[0\] \(canvas\).*missing premium_1024"):
        proxy_config.check(wrong)
