"""The contract every gesso family plugin should pass, as a pytest class to subclass.

    from gesso.testing import FamilyContract

    class TestAcmeContract(FamilyContract):
        distribution = "gesso-acme"
        examples = [("bedrock/acme.painter-v1", "a fox", {"steps": 3})]

pytest then checks, for the distribution's models: the registrations are well formed (a family, a name, a
valid JSON Schema, non-negative prices, an emulator); each example runs end to end on the local emulator
through real boto3 and comes back with images and a price; an unknown parameter is refused, naming it, before
anything is sent; and the plugin's hooks decline models that are not its own. Each failure names the model
and the rule it broke, and what to set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import pytest

from gesso import plugins
from gesso.emulator import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY, Emulator
from gesso.errors import InvalidRequestError
from gesso.types import Model, PreparedRequest


class FamilyContract:
    """Subclass with ``distribution`` (the plugin's distribution name) and ``examples``: one or more
    ``(model, prompt, kwargs)`` calls that should succeed."""

    distribution: ClassVar[str]
    examples: ClassVar[Sequence[tuple[str, str | None, dict[str, Any]]]]

    @pytest.fixture
    def contract_emulator(self) -> Iterator[Emulator]:
        plugins.reset()
        with Emulator(port=0, credentials={EMULATOR_ACCESS_KEY: EMULATOR_SECRET_KEY}) as emulator:
            yield emulator
        plugins.reset()

    @pytest.fixture
    def contract_kwargs(self, contract_emulator: Emulator) -> dict[str, Any]:
        return {
            "aws_bedrock_runtime_endpoint": contract_emulator.url,
            "aws_access_key_id": EMULATOR_ACCESS_KEY,
            "aws_secret_access_key": EMULATOR_SECRET_KEY,
            "aws_region_name": "us-east-1",
            "max_retries": 0,
        }

    def _models(self) -> list[Model]:
        cls = type(self).__name__
        distribution = getattr(self, "distribution", None)
        assert distribution, f"{cls}: set distribution = '<your distribution name>' (e.g. 'gesso-acme')"
        examples = getattr(self, "examples", None)
        assert examples, f"{cls}: set examples = [(model, prompt, kwargs), ...], calls that should succeed"
        found = [m for m in plugins.get_registry().models if m.distribution == distribution]
        assert found, f"{distribution} registers no models (is it installed, and not excluded by GESSO_PLUGINS?)"
        return found

    def test_registrations_are_well_formed(self, contract_emulator: Emulator) -> None:
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

    def test_examples_run_on_the_emulator(self, contract_emulator: Emulator, contract_kwargs: dict[str, Any]) -> None:
        from gesso.api import image_generation

        self._models()
        for model, prompt, kwargs in self.examples:
            before = len(contract_emulator.requests)
            response = image_generation(model, prompt, **kwargs, **contract_kwargs)
            assert response.data, f"{model}: the example {kwargs} returned no images (see gesso_parse_response)"
            empty = [i for i, item in enumerate(response.data) if not item.b64_json]
            assert not empty, f"{model}: images {empty} of the example {kwargs} have no data (GeneratedImage(b64=...))"
            assert response.cost is not None, f"{model}: the example {kwargs} has no price (gesso_calculate_cost)"
            assert response.cost >= 0, f"{model}: the example {kwargs} costs {response.cost}, a negative price"
            assert len(contract_emulator.requests) > before, (
                f"{model}: the example {kwargs} sent nothing to the emulator; bodies must go through gesso_invoke"
            )

    def test_unknown_parameters_are_refused_before_sending(
        self, contract_emulator: Emulator, contract_kwargs: dict[str, Any]
    ) -> None:
        from gesso.api import image_generation

        self._models()
        for model, prompt, kwargs in self.examples:
            try:
                image_generation(model, prompt, **kwargs, contract_no_such_parameter=1, **contract_kwargs)
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
        sent = len(contract_emulator.requests)
        assert sent == 0, f"{self.distribution}: {sent} requests were sent for calls that must be refused unsent"

    def test_hooks_decline_other_families(self, contract_emulator: Emulator) -> None:
        import inspect

        from gesso.types import ImageRequest, ImageResponse, RawResponse, Target

        stranger = Model(id="contract.stranger-v1", family="contract.stranger")
        request = ImageRequest(model=stranger, model_name=stranger.id, prompt="x", target=Target(model_id=stranger.id))
        prepared = PreparedRequest(bodies=[{}])
        arguments = {
            "request": request,
            "prepared": prepared,
            "response": RawResponse(status=200, body=b"{}"),
        }
        self._models()
        plugin = plugins.get_plugin_manager().get_plugin(self.distribution)
        assert plugin is not None, f"{self.distribution} registers models but no plugin of that name is loaded"
        for name in ("gesso_transform_request", "gesso_parse_response", "gesso_calculate_cost"):
            impl = getattr(plugin, name, None)
            if impl is None:
                continue
            given = dict(arguments, response=ImageResponse(data=[])) if name == "gesso_calculate_cost" else arguments
            accepted = {k: v for k, v in given.items() if k in inspect.signature(impl).parameters}
            rule = f"{self.distribution}.{name} must return None for model {stranger.id} of another family"
            try:
                result = impl(**accepted)
            except Exception as exc:
                pytest.fail(f"{rule} (check request.model.family first), but raised {type(exc).__name__}: {exc}")
            assert result is None, f"{rule}, but returned {result!r}"
