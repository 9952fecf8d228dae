"""gesso's plugin contract, run against this plugin: python -m pytest examples/plugin-hello/tests"""

from gesso.testing import FamilyContract


class TestHelloContract(FamilyContract):
    distribution = "gesso-hello"
    examples = [
        ("bedrock/hello.stripes-v1", "hello", {"stripes": 4}),
        ("bedrock/us.hello.stripes-v1", "hello", {"n": 2, "size": "512x256", "seed": 7}),
    ]
