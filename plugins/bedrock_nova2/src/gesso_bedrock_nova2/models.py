"""The Amazon Nova 2 Omni registration: its id, capabilities, timeout, schema, sizes and emulator.

Every fact here is AWS's, from these sources (named by the short names the code and tests use):

- ``S1``: aws-samples/sample-building-intelligent-multimodal-applications-with-Nova, ``lab-01-nova-text-image.ipynb``
  (text to image) and ``lab-02-nova-image-editing.ipynb`` (image editing);
- ``S2``: aws-samples/amazon-nova-samples, ``nova-omni/getting-started/02-image_generation_examples.ipynb``
  ("Supported Resolutions and Aspect Ratios", and its examples);
- ``BOTO``: botocore's ``bedrock-runtime`` service model (the Converse operation and its shapes);
- ``GUIDE``: the Amazon Nova 2 User Guide, https://docs.aws.amazon.com/nova/latest/nova2-userguide/ (its code
  library's Converse examples; its multimodal page's input image formats and sizes).
"""

from __future__ import annotations

import functools
from typing import Any

from gesso.params import load_schema
from gesso.types import Lifecycle, Model, Size
from gesso_bedrock import CONVERSE
from gesso_bedrock.provider import PROFILE_ONLY

FAMILY = "amazon.nova-2-omni"
#: S1 and S2 call ``us.amazon.nova-2-omni-v1:0`` (a US cross-Region inference profile): the model id is that id
#: without its geographic prefix, as every Bedrock profile id is; AWS's text names no other profile of it
MODEL_ID = "amazon.nova-2-omni-v1:0"
PROFILES = ("us.",)
#: S2's image generation notebook reads answers for up to 5 minutes (``read_timeout=60 * 5``); S1's editing lab
#: 3 minutes; GUIDE's Converse examples 3600 s for long-running requests. The model's default is S2's.
TIMEOUT = 300.0

#: S2, "Supported Resolutions and Aspect Ratios", text-to-image: each aspect ratio and the size it is made at.
#: "Default aspect ratio: 16:9"; "Maximum output size: 4,194,304 pixels (4 megapixels)".
SIZES: dict[str, Size] = {
    "2:1": Size(2880, 1440),
    "16:9": Size(2704, 1520),
    "3:2": Size(2496, 1664),
    "4:3": Size(2352, 1760),
    "1:1": Size(2048, 2048),
    "1:2": Size(1440, 2880),
    "9:16": Size(1520, 2704),
    "2:3": Size(1664, 2496),
    "3:4": Size(1760, 2352),
}
DEFAULT_RATIO = "16:9"
#: S2, image editing: "Maximum output size: 1,048,576 pixels (1 megapixel)"; "Output matches input aspect ratio
#: unless explicitly requested otherwise"
EDIT_MAX_PIXELS = 1_048_576
#: S2: "Maximum output size: 4,194,304 pixels (4 megapixels)": a ``size`` larger than this is refused
MAX_PIXELS = 4_194_304


@functools.cache
def schema() -> dict[str, Any]:
    return load_schema(__package__, "schemas/nova_2_omni.json")


def _emulate(call: Any) -> Any:
    from gesso_bedrock_nova2 import emulation

    return emulation.emulate(call)


def registrations() -> list[Model]:
    return [
        Model(
            id=MODEL_ID,
            family=FAMILY,
            name="Amazon Nova 2 Omni",
            routing_prefixes=PROFILES,
            param_schema=schema(),
            # AWS publishes no price for the preview: a deployment gives one (prices=, or a proxy's model_info
            # input_cost_per_token / output_cost_per_token), counted by the answer's token usage
            priced_per="token",
            capabilities={
                "text_to_image",
                "edit",
                # sent to Bedrock's Converse API (gesso_bedrock.CONVERSE), not InvokeModel
                CONVERSE,
                # S1 and S2 invoke it only through its inference profile
                PROFILE_ONLY,
            },
            # S1 and S2 mark it a preview; AWS's lifecycle pages give it no end of life
            lifecycle=Lifecycle(status="active", source="aws-samples Nova 2 Omni notebooks (preview)"),
            timeout=TIMEOUT,
            emulator=_emulate,
        )
    ]
