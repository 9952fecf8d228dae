"""The plugin manager: registration, conflicts, load-failure isolation, GESSO_PLUGINS, and a third-party
family running end to end (with its own emulation) next to Nova."""

from __future__ import annotations

import json
import logging

import pytest

import gesso
from gesso import plugins
from gesso.errors import InvalidRequestError, PluginConflictError, ProviderError
from gesso.types import GeneratedImage, Model, ParsedResponse, PreparedRequest


class Painter:
    """A whole family in a few lines: what a third party writes."""

    SCHEMA = {
        "type": "object",
        "additionalProperties": False,
        "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string", "maxLength": 20},
            "steps": {"type": "integer", "minimum": 1, "maximum": 9},
        },
    }

    @staticmethod
    def emulate(call):
        call.validate()
        return {"picture": call.image(48, 16, call.body["prompt"])}

    @gesso.hookimpl
    def gesso_register_models(self):
        return [
            Model(
                id="test.painter-v1",
                family="test.painter",
                param_schema=self.SCHEMA,
                prices={"image": 0.5},
                emulator=self.emulate,
            )
        ]

    @gesso.hookimpl
    def gesso_transform_request(self, request):
        if request.model.family != "test.painter":
            return None
        from gesso.params import raise_for, schema_violations

        body = {"prompt": request.prompt, **request.params}
        raise_for(schema_violations(self.SCHEMA, body), model=request.model_name)
        return PreparedRequest(bodies=[body] * (request.n or 1))

    @gesso.hookimpl
    def gesso_parse_response(self, request, response):
        if request.model.family != "test.painter":
            return None
        return ParsedResponse(images=[GeneratedImage(b64=json.loads(response.body)["picture"])])

    @gesso.hookimpl
    def gesso_calculate_cost(self, request, response):
        if request.model.family != "test.painter":
            return None
        return request.model.prices["image"] * len(response.data)


def test_builtin_transport_and_installed_nova_load_lazily():
    listed = plugins.list_plugins(include_builtin=True)
    names = [p["name"] for p in listed]
    assert names[0] == "gesso.bedrock"
    assert "gesso-bedrock-nova" in names
    assert "gesso.bedrock" not in [p["name"] for p in plugins.list_plugins()], "built-ins only with include_builtin"
    nova = next(p for p in listed if p["name"] == "gesso-bedrock-nova")
    assert nova["hooks"] == [
        "gesso_calculate_cost",
        "gesso_parse_response",
        "gesso_register_models",
        "gesso_transform_request",
    ]
    assert nova["models"] == [
        "amazon.nova-canvas-v1:0",
        "us.amazon.nova-canvas-v1:0",
        "eu.amazon.nova-canvas-v1:0",
        "apac.amazon.nova-canvas-v1:0",
    ]
    assert nova["error"] is None and nova["version"] == "0.1.0"


def test_a_host_registered_family_runs_end_to_end_with_its_own_emulation(aws, emulator):
    gesso.register_plugin(Painter(), name="painter")
    resp = gesso.image_generation("bedrock/test.painter-v1", "a fox", n=2, steps=3, **aws)
    assert len(resp.data) == 2 and resp.cost == pytest.approx(1.0)
    assert emulator.requests[-1].json() == {"prompt": "a fox", "steps": 3}
    with pytest.raises(InvalidRequestError, match=r"steps: must be between 1 and 9 \(got 12\)"):
        gesso.image_generation("bedrock/test.painter-v1", "a fox", steps=12, **aws)
    # Nova still works beside it
    assert gesso.image_generation("bedrock/amazon.nova-canvas-v1:0", "a fox", **aws).cost == pytest.approx(0.04)


def test_two_plugins_claiming_one_id_is_one_error_naming_both():
    class Clash:
        @gesso.hookimpl
        def gesso_register_models(self):
            return [
                Model(id="amazon.nova-canvas-v1:0", family="x"),
                Model(id="other-v1", family="x", routing_prefixes=("eu.",)),
            ]

    class Clash2:
        @gesso.hookimpl
        def gesso_register_models(self):
            return [Model(id="eu.other-v1", family="y")]

    gesso.register_plugin(Clash(), name="gesso-clash")
    gesso.register_plugin(Clash2(), name="gesso-clash-two")
    with pytest.raises(PluginConflictError) as info:
        gesso.image_generation("bedrock/amazon.nova-canvas-v1:0", "x")
    assert info.value.conflicts == {
        "amazon.nova-canvas-v1:0": ["gesso-bedrock-nova", "gesso-clash"],
        "eu.other-v1": ["gesso-clash", "gesso-clash-two"],
    }
    message = str(info.value)
    assert "amazon.nova-canvas-v1:0: claimed by gesso-bedrock-nova, gesso-clash" in message
    assert "GESSO_PLUGINS" in message
    # the plugin listing still works, for diagnosis
    assert any(p["name"] == "gesso-clash" for p in plugins.list_plugins())


def test_a_misspelt_hook_is_refused_with_a_clear_reason():
    class Typo:
        @gesso.hookimpl
        def gesso_transfrom_request(self, request):
            return None

    with pytest.raises(ValueError, match="unknown hook.*gesso_transfrom_request"):
        gesso.register_plugin(Typo(), name="typo")


def test_a_hook_with_a_wrong_argument_is_refused():
    class WrongArgs:
        @gesso.hookimpl
        def gesso_transform_request(self, req):
            return None

    with pytest.raises(ValueError, match="registration failed"):
        gesso.register_plugin(WrongArgs(), name="wrong-args")
    # the host keeps working
    assert "amazon.nova-canvas-v1:0" in plugins.get_registry().by_id


def test_registration_that_raises_is_isolated(caplog):
    class Exploding:
        @gesso.hookimpl
        def gesso_register_models(self):
            raise RuntimeError("boom")

    gesso.register_plugin(Exploding(), name="exploding")
    with caplog.at_level(logging.WARNING, logger="gesso.plugins"):
        assert "amazon.nova-canvas-v1:0" in plugins.get_registry().by_id
    row = next(p for p in plugins.list_plugins() if p["name"] == "exploding")
    assert row["error"] == "gesso_register_models failed: RuntimeError: boom"
    assert "exploding" in caplog.text


def test_registration_must_return_model_objects():
    class Dicts:
        @gesso.hookimpl
        def gesso_register_models(self):
            return [{"id": "x"}]

    gesso.register_plugin(Dicts(), name="dicts")
    plugins.get_registry()
    row = next(p for p in plugins.list_plugins() if p["name"] == "dicts")
    assert "must return gesso.types.Model objects" in row["error"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", []), ("gesso-bedrock-nova", ["gesso-bedrock-nova"]), ("Gesso_Bedrock.Nova, other", ["gesso-bedrock-nova"])],
)
def test_gesso_plugins_env_restricts_loading(monkeypatch, value, expected):
    monkeypatch.setenv("GESSO_PLUGINS", value)
    plugins.reset()
    assert [p["name"] for p in plugins.list_plugins()] == expected
    # the built-in transport always loads
    assert plugins.list_plugins(include_builtin=True)[0]["name"] == "gesso.bedrock"


def test_with_no_family_plugin_every_model_is_unknown(monkeypatch):
    monkeypatch.setenv("GESSO_PLUGINS", "")
    plugins.reset()
    with pytest.raises(gesso.errors.UnknownModelError, match="pip install gesso-bedrock-nova"):
        gesso.image_generation("bedrock/amazon.nova-canvas-v1:0", "x")


def test_a_family_without_transform_is_a_clear_error():
    class RegisterOnly:
        @gesso.hookimpl
        def gesso_register_models(self):
            return [Model(id="test.lonely-v1", family="test.lonely")]

    gesso.register_plugin(RegisterOnly(), name="register-only")
    with pytest.raises(ProviderError, match="No installed plugin builds requests for model family 'test.lonely'"):
        gesso.image_generation("bedrock/test.lonely-v1", "x")


def test_a_wrapping_plugin_sees_every_invocation(aws):
    seen = []

    class Recorder:
        @gesso.hookimpl(tryfirst=True)
        def gesso_invoke(self, invocation):
            seen.append((invocation.target.model_id, json.loads(invocation.body)))
            return None  # decline: the Bedrock transport still sends it

    gesso.register_plugin(Recorder(), name="recorder")
    gesso.image_generation("bedrock/amazon.nova-canvas-v1:0", "a cat", **aws)
    assert seen == [("amazon.nova-canvas-v1:0", {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a cat"}})]
    assert "secret" not in repr(seen)


def test_unregister_plugin(aws):
    painter = Painter()
    gesso.register_plugin(painter, name="painter")
    assert plugins.get_registry().get("test.painter-v1") is not None
    gesso.unregister_plugin(painter)
    assert plugins.get_registry().get("test.painter-v1") is None


# -- pluggy through its public API ------------------------------------------------------------------------------


def test_the_manager_holds_a_registration_object_per_plugin():
    painter = Painter()
    gesso.register_plugin(painter, name="painter")
    registration = plugins.get_plugin_manager().get_plugin("painter")
    assert isinstance(registration, plugins.Registration)
    assert registration.plugin is painter and registration.name == "painter"
    model = plugins.get_registry().get("test.painter-v1")
    reached = plugins.route(model).gesso_transform_request.get_hookimpls()
    assert registration in {impl.plugin for impl in reached}
    assert next(p for p in plugins.list_plugins() if p["name"] == "painter")["hooks"] == [
        "gesso_calculate_cost",
        "gesso_parse_response",
        "gesso_register_models",
        "gesso_transform_request",
    ]
    gesso.unregister_plugin(painter)
    assert plugins.get_plugin_manager().get_plugin("painter") is None
    with pytest.raises(ValueError, match="not a registered gesso plugin"):
        gesso.unregister_plugin(painter)


def test_a_stage_hook_under_another_name_is_routed_to_its_own_family_only(aws):
    called = []

    class Renamed(Painter):
        @gesso.hookimpl(specname="gesso_transform_request")
        def build(self, request):
            called.append(request.model.family)
            return Painter.gesso_transform_request(self, request)

    Renamed.gesso_transform_request = None  # only the renamed implementation
    gesso.register_plugin(Renamed(), name="renamed")
    nova = plugins.get_registry().get("amazon.nova-canvas-v1:0")
    renamed = plugins.get_plugin_manager().get_plugin("renamed")
    assert renamed not in {impl.plugin for impl in plugins.route(nova).gesso_transform_request.get_hookimpls()}
    assert gesso.image_generation("bedrock/amazon.nova-canvas-v1:0", "a fox", **aws).data
    assert called == []
    assert gesso.image_generation("bedrock/test.painter-v1", "a fox", **aws).data
    assert called == ["test.painter"]


def test_one_plugin_registered_twice_is_refused():
    painter = Painter()
    gesso.register_plugin(painter, name="painter")
    with pytest.raises(ValueError, match="already registered, as painter"):
        gesso.register_plugin(painter, name="painter-again")


def test_a_refused_registration_leaves_nothing_in_the_manager():
    class HalfRight:
        @gesso.hookimpl
        def gesso_register_models(self):
            return []

        @gesso.hookimpl
        def gesso_transform_request(self, req):
            return None

    with pytest.raises(ValueError, match="registration failed"):
        gesso.register_plugin(HalfRight(), name="half-right")
    manager = plugins.get_plugin_manager()
    assert manager.get_plugin("half-right") is None
    assert all(
        manager.get_name(impl.plugin) != "half-right" for impl in manager.hook.gesso_register_models.get_hookimpls()
    )


def test_each_reaches_one_plugin_at_a_time():
    gesso.register_plugin(Painter(), name="painter")
    declared = {
        name: [m.id for answer in caller() for m in answer] for name, caller in plugins.each("gesso_register_models")
    }
    assert declared["painter"] == ["test.painter-v1"]
    assert "amazon.nova-canvas-v1:0" in declared["gesso-bedrock-nova"]
    assert "test.painter-v1" not in declared["gesso-bedrock-nova"]


def test_gesso_reaches_into_no_pluggy_or_interpreter_internals():
    """No write to or read of pluggy's private attributes (HookImpl.function, _hookimpls...), no stack walking:
    gesso's source and its plugins' use pluggy's public API only."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sources = [*root.glob("core/src/gesso/**/*.py"), *root.glob("plugins/*/src/**/*.py")]
    internals = {"function", "_hookimpls", "_hookexec", "_name2plugin", "_getframe", "_current_frames", "f_back",
                 "f_code", "f_locals", "tb_frame", "tb_next", "_inner_hookexec", "_call_history", "_orig"}  # fmt: skip
    found = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Attribute):
                continue
            inspected = (
                isinstance(node.value, ast.Name)
                and node.value.id == "inspect"
                and node.attr in {"stack", "currentframe"}
            )
            if node.attr in internals or inspected:
                found.append(f"{path.relative_to(root)}:{node.lineno} .{node.attr}")
    assert len(sources) > 50 and found == []
