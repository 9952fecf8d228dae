"""The contract every gesso family plugin should pass, as a pytest class to subclass.

    from gesso.testing import FamilyContract

    class TestAcmeContract(FamilyContract):
        distribution = "gesso-acme"
        examples = [("acme/painter-v1", "a fox", {"steps": 3})]

pytest then checks, for the distribution's models: the registrations are well formed (a family, a name, a
valid JSON Schema, non-negative prices, an emulator); each example runs end to end on its provider's
emulator (:meth:`gesso.provider.Provider.emulate`) and comes back with images and a price; an unknown
parameter is refused, naming it, before anything is sent; and the plugin's stage hooks are reached only by
calls of its own models. Each failure names the model and the rule it broke, and what to set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import pytest

from gesso import plugins
from gesso.errors import InvalidRequestError
from gesso.hookspecs import hookimpl
from gesso.types import Model


class _Counter:
    """A wrapper plugin that records every ``gesso_invoke``: how the contract knows what was sent."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    @hookimpl(wrapper=True)
    def gesso_invoke(self, request: Any, invocation: Any) -> Any:
        self.sent.append(invocation)
        return (yield)


class FamilyContract:
    """Subclass with ``distribution`` (the plugin's distribution name) and ``examples``: one or more
    ``(model, prompt, kwargs)`` calls that should succeed."""

    distribution: ClassVar[str]
    examples: ClassVar[Sequence[tuple[str, str | None, dict[str, Any]]]]

    @pytest.fixture
    def contract_emulator(self) -> Iterator[_Counter]:
        """Records the calls sent (``.sent``); each example runs on its provider's emulator."""
        plugins.reset()
        counter = _Counter()
        plugins.register_plugin(counter, name="gesso.testing.counter")
        yield counter
        plugins.reset()

    @contextlib.contextmanager
    def _emulated(self, model: str, kwargs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        with plugins.get_registry().emulate(model, kwargs) as options:
            yield {**options, **self.contract_options}

    #: options every example is called with (e.g. no retries, so a failure shows at once)
    contract_options: ClassVar[dict[str, Any]] = {}

    def _models(self) -> list[Model]:
        cls = type(self).__name__
        distribution = getattr(self, "distribution", None)
        assert distribution, f"{cls}: set distribution = '<your distribution name>' (e.g. 'gesso-acme')"
        examples = getattr(self, "examples", None)
        assert examples, f"{cls}: set examples = [(model, prompt, kwargs), ...], calls that should succeed"
        found = [m for m in plugins.get_registry().models if m.distribution == distribution]
        assert found, f"{distribution} registers no models (is it installed, and not excluded by GESSO_PLUGINS?)"
        return found

    def test_registrations_are_well_formed(self, contract_emulator: _Counter) -> None:
        import jsonschema

        for model in self._models():
            where = f"Model {model.id} (from {model.distribution})"
            assert model.family, f"{where} has no family: set Model(family=...)"
            assert model.name, f"{where} has no name: set Model(name=...), e.g. the model's display name"
            assert isinstance(model.param_schema, Mapping) and model.param_schema, (
                f"{where} has no param_schema: set Model(param_schema=...) to the JSON Schema of its request body"
            )
            cls = jsonschema.validators.validator_for(model.param_schema, default=jsonschema.Draft202012Validator)
            try:
                cls.check_schema(model.param_schema)
            except jsonschema.SchemaError as exc:
                pytest.fail(f"{where}: param_schema is not a valid JSON Schema: {exc.message}")
            assert model.param_schema.get("type") == "object", (
                f'{where}: param_schema must describe an object ("type": "object"), '
                f"not {model.param_schema.get('type')!r}"
            )
            bad = {k: p for k, p in model.prices.items() if not isinstance(p, (int, float)) or p < 0}
            assert not bad, f"{where}: prices must be non-negative numbers of USD, got {bad}"
            assert model.emulator is not None, (
                f"{where} has no emulator, so it cannot be tested offline: set Model(emulator=...)"
            )

    def test_examples_run_on_the_emulator(self, contract_emulator: _Counter) -> None:
        from gesso.api import image_generation

        self._models()
        for model, prompt, kwargs in self.examples:
            before = len(contract_emulator.sent)
            with self._emulated(model, kwargs) as options:
                response = image_generation(model, prompt, **kwargs, **options)
            assert response.data, f"{model}: the example {kwargs} returned no images (see gesso_parse_response)"
            empty = [i for i, item in enumerate(response.data) if not item.b64_json]
            assert not empty, f"{model}: images {empty} of the example {kwargs} have no data (GeneratedImage(b64=...))"
            assert response.cost is not None, f"{model}: the example {kwargs} has no price (gesso_calculate_cost)"
            assert response.cost >= 0, f"{model}: the example {kwargs} costs {response.cost}, a negative price"
            assert len(contract_emulator.sent) > before, (
                f"{model}: the example {kwargs} sent nothing; bodies must go through gesso_invoke"
            )

    def test_unknown_parameters_are_refused_before_sending(self, contract_emulator: _Counter) -> None:
        from gesso.api import image_generation

        self._models()
        for model, prompt, kwargs in self.examples:
            try:
                with self._emulated(model, kwargs) as options:
                    image_generation(model, prompt, **kwargs, contract_no_such_parameter=1, **options)
            except InvalidRequestError as exc:
                assert "contract_no_such_parameter" in str(exc), (
                    f"{model}: an unknown parameter was refused without naming it; the error must name "
                    f"contract_no_such_parameter, got: {exc}"
                )
            else:
                pytest.fail(
                    f"{model}: the unknown parameter contract_no_such_parameter=1 was accepted; "
                    "gesso_transform_request must refuse it with InvalidRequestError before sending"
                )
        sent = len(contract_emulator.sent)
        assert sent == 0, f"{self.distribution}: {sent} requests were sent for calls that must be refused unsent"

    def test_stage_hooks_reach_only_own_models(self, contract_emulator: _Counter) -> None:
        """gesso routes each call's stages to the plugin that registered its model: this plugin's hooks
        are never called for a model of another plugin (so they need not check)."""
        own = self._models()
        plugin = plugins.get_plugin_manager().get_plugin(self.distribution)
        assert plugin is not None, f"{self.distribution} registers models but no plugin of that name is loaded"
        others = [m for m in plugins.get_registry().models if m.distribution != self.distribution]
        for model in others[:20]:
            for stage in ("gesso_transform_request", "gesso_parse_response", "gesso_calculate_cost"):
                reached = {impl.plugin for impl in getattr(plugins.route(model), stage).get_hookimpls()}
                assert plugin not in reached, f"{self.distribution}.{stage} would be called for {model.id}"
        for model in own:
            reached = {impl.plugin for impl in plugins.route(model).gesso_transform_request.get_hookimpls()}
            assert plugin in reached, f"{self.distribution}.gesso_transform_request is not reached for {model.id}"
