"""The contract every gesso family plugin should pass, as a pytest class to subclass.

    from gesso.testing import FamilyContract

    class TestAcmeContract(FamilyContract):
        distribution = "gesso-acme"
        examples = [("bedrock/acme.painter-v1", "a fox", {"steps": 3})]

pytest then checks, for the distribution's models: the registrations are well formed (a valid JSON
Schema, non-negative prices, an emulator); each example runs end to end on the local emulator through real
boto3 and comes back with images and a price; an unknown parameter is refused, naming it, before anything
is sent; and the plugin's hooks decline models that are not its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
        found = [m for m in plugins.get_registry().models if m.distribution == self.distribution]
        assert found, f"{self.distribution} registers no models (is it installed, and not excluded by GESSO_PLUGINS?)"
        return found

    def test_registrations_are_well_formed(self, contract_emulator: Emulator) -> None:
        import jsonschema

        for model in self._models():
            jsonschema.validators.validator_for(
                model.param_schema, default=jsonschema.Draft202012Validator
            ).check_schema(model.param_schema)
            assert model.param_schema.get("type") == "object", f"{model.id}: the body schema must describe an object"
            assert all(isinstance(p, (int, float)) and p >= 0 for p in model.prices.values()), model.id
            assert model.emulator is not None, f"{model.id}: no emulator, so it cannot be tested offline"
            assert model.family and model.name, model.id

    def test_examples_run_on_the_emulator(self, contract_emulator: Emulator, contract_kwargs: dict[str, Any]) -> None:
        from gesso.api import image_generation

        for model, prompt, kwargs in self.examples:
            before = len(contract_emulator.requests)
            response = image_generation(model, prompt, **kwargs, **contract_kwargs)
            assert response.data, f"{model}: no images"
            assert all(item.b64_json for item in response.data), model
            assert response.cost is not None and response.cost >= 0, f"{model}: no price"
            assert len(contract_emulator.requests) > before, f"{model}: nothing was sent"

    def test_unknown_parameters_are_refused_before_sending(
        self, contract_emulator: Emulator, contract_kwargs: dict[str, Any]
    ) -> None:
        from gesso.api import image_generation

        for model, prompt, kwargs in self.examples:
            with pytest.raises(InvalidRequestError) as info:
                image_generation(model, prompt, **kwargs, contract_no_such_parameter=1, **contract_kwargs)
            assert "contract_no_such_parameter" in str(info.value), f"{model}: the error must name the parameter"
        assert len(contract_emulator.requests) == 0

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
        plugin = plugins.get_plugin_manager().get_plugin(self.distribution)
        assert plugin is not None, f"{self.distribution} is not loaded"
        for name in ("gesso_transform_request", "gesso_parse_response", "gesso_calculate_cost"):
            impl = getattr(plugin, name, None)
            if impl is None:
                continue
            given = dict(arguments, response=ImageResponse(data=[])) if name == "gesso_calculate_cost" else arguments
            accepted = {k: v for k, v in given.items() if k in inspect.signature(impl).parameters}
            assert impl(**accepted) is None, f"{self.distribution}.{name} must return None for other families"
