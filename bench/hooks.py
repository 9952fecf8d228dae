"""What gesso's hook routing and guards cost per call: each stage hook called through ``plugins.route(model)``,
timed with timeit (not part of the test suite).

    .venv/bin/python bench/hooks.py

One Nova call on the in-process emulator captures a real request, plan, response and answer; then each stage is
called on its own, as a call makes it: ``gesso_invoke`` through Bedrock's lifecycle wrapper to a ``tryfirst``
implementation that answers from the capture (nothing is sent), Nova's ``gesso_parse_response`` and
``gesso_calculate_cost``, and the cost of a family whose hook does nothing (what remains is the routing and the
guard). Each figure is the best of 15 runs. Run it on two versions of gesso, alternately: the machine's noise is
larger than the differences.
"""

from __future__ import annotations

import os
import sys
import timeit
import warnings
from typing import Any

for name in [name for name in os.environ if name.startswith("AWS_")]:
    del os.environ[name]
os.environ.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)

import pluggy  # noqa: E402

import gesso  # noqa: E402
from gesso import plugins  # noqa: E402
from gesso.types import Model  # noqa: E402
from gesso_bedrock.emulator import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY, Emulator  # noqa: E402

NOVA = "bedrock/amazon.nova-canvas-v1:0"
captured: dict[str, Any] = {}


class Capture:
    """Keeps one call's request, invocation, answer, plan and response."""

    @gesso.hookimpl(wrapper=True)
    def gesso_invoke(self, request: Any, invocation: Any) -> Any:
        raw = yield
        captured.update(request=request, invocation=invocation, raw=raw)
        return raw

    @gesso.hookimpl(wrapper=True)
    def gesso_calculate_cost(self, request: Any, prepared: Any, response: Any) -> Any:
        cost = yield
        captured.update(prepared=prepared, response=response)
        return cost


class Replay:
    """Answers every gesso_invoke with the captured answer, first."""

    @gesso.hookimpl(tryfirst=True)
    def gesso_invoke(self, request: Any, invocation: Any) -> Any:
        return captured["raw"]


class Idle:
    """A family whose cost hook does nothing."""

    @gesso.hookimpl
    def gesso_register_models(self) -> list[Model]:
        return [Model(id="bench.idle-v1", family="bench.idle", prices={"image": 0.5})]

    @gesso.hookimpl
    def gesso_calculate_cost(self) -> float:
        return 0.5


def main() -> None:
    warnings.simplefilter("ignore")
    with Emulator(port=0, credentials={EMULATOR_ACCESS_KEY: EMULATOR_SECRET_KEY}) as emulator:
        capture = Capture()
        plugins.register_plugin(capture, name="capture")
        gesso.image_generation(
            NOVA, "an otter", aws_bedrock_runtime_endpoint=emulator.url, aws_access_key_id=EMULATOR_ACCESS_KEY,
            aws_secret_access_key=EMULATOR_SECRET_KEY, aws_region_name="us-east-1",
        )  # fmt: skip
        plugins.unregister_plugin(capture)
    plugins.register_plugin(Replay(), name="replay")
    plugins.register_plugin(Idle(), name="idle")
    request, invocation, raw = captured["request"], captured["invocation"], captured["raw"]
    prepared, response = captured["prepared"], captured["response"]
    nova = plugins.route(request.model)
    idle_model = plugins.get_registry().get("bench.idle-v1")
    assert idle_model is not None
    idle = plugins.route(idle_model)
    assert nova.gesso_invoke(request=request, invocation=invocation) is raw
    stage = {"request": request, "prepared": prepared}
    cases = {
        "route(model), cached": lambda: plugins.route(request.model),
        "gesso_invoke (wrapper + tryfirst answer)": lambda: nova.gesso_invoke(request=request, invocation=invocation),
        "gesso_parse_response (Nova)": lambda: nova.gesso_parse_response(**stage, response=raw),
        "gesso_calculate_cost (Nova)": lambda: nova.gesso_calculate_cost(**stage, response=response),
        "gesso_calculate_cost (a hook doing nothing)": lambda: idle.gesso_calculate_cost(**stage, response=response),
    }
    print(f"python {sys.version.split()[0]}, pluggy {pluggy.__version__}")
    number = 20000
    for label, call in cases.items():
        best = min(timeit.repeat(call, number=number, repeat=15)) / number * 1e6
        print(f"{label:50s} {best:7.2f} us")


if __name__ == "__main__":
    main()
