"""The proxy prefers live deployments: among a model name's deployments, one whose model is past its end of life
(Nova Canvas v1: 2026-09-30, Titan Image Generator v2: 2026-06-30, AWS's lifecycle pages) is tried after the
others, whatever the config's order or the calls in flight; it still serves when the others rest."""

from __future__ import annotations

import datetime

from gesso.proxy import config as proxy_config
from gesso.proxy.router import Router
from gesso.types import Lifecycle

NOVA = "bedrock/amazon.nova-canvas-v1:0"
CORE = "bedrock/stability.stable-image-core-v1:1"


def parsed() -> proxy_config.ProxyConfig:
    return proxy_config.parse({"model_list": [
        {"model_name": "stills", "model_info": {"id": "canvas"}, "litellm_params": {"model": NOVA}},
        {"model_name": "stills", "model_info": {"id": "core"}, "litellm_params": {"model": CORE}},
    ]})  # fmt: skip


def test_a_deployment_past_its_end_of_life_is_tried_last():
    config = parsed()
    assert proxy_config.retired(config.deployments) == {"canvas"}  # (today is after 2026-09-30)
    router = Router(config.deployments, 5.0, proxy_config.retired(config.deployments))
    assert [d.id for d in router.order("stills")] == ["core", "canvas"]  # though listed first
    router.in_flight["core"] = 50  # busy: still first, the retired one is the fallback
    assert [d.id for d in router.order("stills")] == ["core", "canvas"]
    router.resting_until["core"] = float("inf")  # resting: the retired one serves meanwhile
    assert [d.id for d in router.order("stills")] == ["canvas", "core"]
    plain = Router(config.deployments, 5.0)  # without the lifecycle: config order, least in flight
    assert [d.id for d in plain.order("stills")] == ["canvas", "core"]


def test_end_of_life_is_read_from_the_model_s_lifecycle():
    nova, core = (proxy_config.lifecycle(d) for d in parsed().deployments)
    assert (nova.status, nova.end_of_life) == ("legacy", "2026-09-30") and core.status == "active"
    assert proxy_config.past_end_of_life(nova, datetime.date(2026, 9, 30))  # the day itself
    assert not proxy_config.past_end_of_life(nova, datetime.date(2026, 9, 29))
    assert not proxy_config.past_end_of_life(core)
    assert proxy_config.past_end_of_life(Lifecycle(status="eol"))
    assert not proxy_config.past_end_of_life(Lifecycle(status="legacy"))  # no date announced
    assert not proxy_config.past_end_of_life(None)
