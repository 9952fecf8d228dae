"""response_format="url" with an image store: each image is written and its URL returned. file:// is the
core's; s3:// is gesso-bedrock's, run here against moto's S3 server on loopback; any plugin can add a scheme."""

from __future__ import annotations

import asyncio
import base64
import re
import threading
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

import gesso
from gesso import plugins
from gesso.errors import InvalidRequestError, ProviderError
from gesso.hookspecs import hookimpl
from gesso.types import StoreScheme
from gesso_bedrock import store as s3_store
from helpers import moto_server, png_info

NOVA = "bedrock/amazon.nova-canvas-v1:0"
NAME_RE = r"[0-9a-f]{32}\.png"


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read()


def query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


# -- no store: data URLs, as before ---------------------------------------------------------------------------


def test_url_without_a_store_is_a_data_url(aws, monkeypatch):
    monkeypatch.delenv("GESSO_IMAGE_STORE", raising=False)
    response = gesso.image_generation(NOVA, "otter", response_format="url", **aws)
    assert response.data[0].url.startswith("data:image/png;base64,iVBOR")
    assert response.output_format is None and "output_format" not in response.to_dict()


# -- file:// ---------------------------------------------------------------------------------------------------


def test_file_store_writes_each_image_and_returns_its_file_url(aws, tmp_path):
    folder = tmp_path / "made" / "by-gesso"  # missing: the store makes it
    response = gesso.image_generation(NOVA, "otter", n=2, response_format="url", image_store=folder.as_uri(), **aws)
    urls = [item.url for item in response.data]
    assert all(re.fullmatch(f"{re.escape(folder.as_uri())}/{NAME_RE}", url) for url in urls)
    paths = [Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path)) for url in urls]
    assert sorted(paths) == sorted(folder.iterdir()) and len(set(paths)) == 2
    assert all(png_info(base64.b64encode(path.read_bytes()).decode()).format == "png" for path in paths)
    assert response.data[0].b64_json is None


def test_the_store_comes_from_GESSO_IMAGE_STORE_for_url_responses_only(aws, tmp_path, monkeypatch):
    monkeypatch.setenv("GESSO_IMAGE_STORE", tmp_path.as_uri())
    response = gesso.image_generation(NOVA, "otter", response_format="url", **aws)
    assert response.data[0].url.startswith(tmp_path.as_uri() + "/")
    inline = gesso.image_generation(NOVA, "otter", **aws)  # b64_json: the images stay inline
    assert inline.data[0].b64_json and len(list(tmp_path.iterdir())) == 1


def test_image_store_is_read_from_os_environ(aws, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_IMAGE_DIR", (tmp_path / "env").as_uri())
    response = gesso.image_generation(
        NOVA, "otter", response_format="url", image_store="os.environ/MY_IMAGE_DIR", **aws
    )
    assert response.data[0].url.startswith((tmp_path / "env").as_uri() + "/")


# -- bad store options are refused before anything is sent --------------------------------------------------


def test_an_unknown_scheme_names_the_parameter_and_the_installed_schemes(aws, emulator):
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(NOVA, "otter", response_format="url", image_store="gs://bucket/images", **aws)
    assert info.value.param == "image_store"
    assert "'gs://' has no installed image store (installed: file://, s3://)" in str(info.value)
    assert emulator.stats()["requests"] == 0


def test_an_unknown_scheme_in_the_environment_says_where_it_came_from(aws, emulator, monkeypatch):
    monkeypatch.setenv("GESSO_IMAGE_STORE", "ftp://example.com/images")
    with pytest.raises(InvalidRequestError, match=r"image_store: .*'ftp://'.*from GESSO_IMAGE_STORE"):
        gesso.image_generation(NOVA, "otter", response_format="url", **aws)
    assert emulator.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"image_store": "s3://Bad_Bucket/x"}, r"image_store: must be s3://<bucket>/<prefix>"),
        ({"image_store": "s3:///nobucket"}, r"image_store: must be s3://<bucket>/<prefix>"),
        ({"image_store": "s3://bucket/x?versioning=1"}, r"image_store: an s3:// URL takes no query"),
        ({"image_store": "file://otherhost/images"}, r"image_store: a file URL names a directory on this machine"),
        ({"image_store": "file://"}, r"image_store: must name an absolute directory"),
        ({"image_store": "images/"}, r"image_store: must be a URL \(installed: file://, s3://\)"),
        ({"image_store": 42}, r"image_store: must be a URL string \(got int\)"),
        ({"image_store": "os.environ/GESSO_TEST_UNSET"}, r"image_store: environment variable GESSO_TEST_UNSET"),
        ({"image_store": "file:///tmp/x", "response_format": "b64_json"}, r'image_store: applies to response_format="url"'),
        ({"image_url_expiry": 60}, r"image_url_expiry: applies to URLs in an image store only"),
        ({"image_store": "s3://bucket/x", "image_url_expiry": 0}, r"image_url_expiry: must be a positive integer"),
        ({"image_store": "s3://bucket/x", "image_url_expiry": 604_801}, r"at most 604,800 \(got 604801\)"),
        ({"image_store": "s3://bucket/x", "image_url_expiry": 60.5}, r"image_url_expiry: must be a positive integer"),
        ({"image_store": "s3://bucket/x", "image_url_expiry": True}, r"image_url_expiry: must be a positive integer"),
    ],
)  # fmt: skip
def test_bad_store_options_are_refused_before_sending(aws, emulator, kwargs, expected):
    kwargs = {"response_format": "url", **kwargs}
    with pytest.raises(InvalidRequestError, match=expected) as info:
        gesso.image_generation(NOVA, "otter", **kwargs, **aws)
    assert "amazon.nova-canvas-v1:0" in str(info.value)
    assert emulator.stats()["requests"] == 0


def test_a_file_in_place_of_the_directory_is_refused_before_sending(aws, emulator, tmp_path):
    (tmp_path / "taken").write_text("not a directory")
    with pytest.raises(InvalidRequestError, match="image_store: .* is a file, not a directory"):
        gesso.image_generation(NOVA, "otter", response_format="url", image_store=(tmp_path / "taken").as_uri(), **aws)
    assert emulator.stats()["requests"] == 0


# -- a plugin's store ---------------------------------------------------------------------------------------------


class MemoryStore:
    """A made-up mem://<name> store that records where and on which thread each image was written."""

    written: dict[str, tuple[bytes, str, str]] = {}

    def __init__(self, url: str, expires_in: int) -> None:
        self.url = url.rstrip("/")
        self.expires_in = expires_in

    def put(self, data: bytes, mime_type: str, name: str) -> str:
        url = f"{self.url}/{name}?expires={self.expires_in}"
        self.written[url] = (data, mime_type, threading.current_thread().name)
        return url


class MemoryStorePlugin:
    @hookimpl
    def gesso_register_image_stores(self):
        return [StoreScheme(scheme="MEM", title="memory", open=MemoryStore)]


class BrokenStorePlugin:
    @hookimpl
    def gesso_register_image_stores(self):
        raise RuntimeError("this plugin is broken")


def test_a_plugin_adds_a_scheme_and_a_broken_one_is_skipped(aws):
    plugins.register_plugin(BrokenStorePlugin())
    plugins.register_plugin(MemoryStorePlugin())
    MemoryStore.written.clear()
    response = gesso.image_generation(
        NOVA, "otter", response_format="url", image_store="mem://shelf", image_url_expiry=90, **aws
    )
    url = response.data[0].url
    assert re.fullmatch(f"mem://shelf/{NAME_RE}\\?expires=90", url)
    data, mime_type, _ = MemoryStore.written[url]
    assert mime_type == "image/png" and data.startswith(b"\x89PNG")


def test_the_async_path_writes_off_the_event_loop(aws):
    plugins.register_plugin(MemoryStorePlugin())
    MemoryStore.written.clear()

    async def call():
        loop_thread = threading.current_thread().name
        response = await gesso.aimage_generation(
            NOVA, "otter", n=2, response_format="url", image_store="mem://a", **aws
        )
        return loop_thread, response

    loop_thread, response = asyncio.run(call())
    threads = {MemoryStore.written[item.url][2] for item in response.data}
    assert len(response.data) == 2 and loop_thread not in threads


# -- s3:// on moto's S3 server --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 on loopback."""
    yield from moto_server()


@pytest.fixture
def bucket(s3_server, monkeypatch):
    """A fresh bucket; the store finds the server, credentials and region where boto3 looks for them."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "s3-test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3-test-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    s3_store.clear_clients()
    name = f"gesso-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3")
    client.create_bucket(Bucket=name)
    yield name, client
    s3_store.clear_clients()


def test_s3_store_uploads_and_returns_a_presigned_url(aws, bucket):
    name, client = bucket
    response = gesso.image_generation(NOVA, "otter", response_format="url", image_store=f"s3://{name}/pre/fix", **aws)
    url = response.data[0].url
    key = urllib.parse.unquote(urllib.parse.urlsplit(url).path).split(f"/{name}/", 1)[1]
    assert re.fullmatch(f"pre/fix/{NAME_RE}", key)
    assert query(url)["X-Amz-Expires"] == "3600" and "X-Amz-Signature" in query(url)
    fetched = fetch(url)
    assert fetched.startswith(b"\x89PNG") and png_info(base64.b64encode(fetched).decode()).width == 1024
    head = client.head_object(Bucket=name, Key=key)
    assert head["ContentType"] == "image/png" and head["ContentLength"] == len(fetched)


def test_s3_url_expiry_is_configurable(aws, bucket):
    name, _ = bucket
    response = gesso.image_generation(
        NOVA, "otter", response_format="url", image_store=f"s3://{name}", image_url_expiry=120, **aws
    )
    url = response.data[0].url
    assert query(url)["X-Amz-Expires"] == "120"
    assert re.search(f"/{name}/{NAME_RE}\\?", url)
    assert fetch(url).startswith(b"\x89PNG")


def test_s3_store_from_the_environment_on_the_async_path(aws, bucket, monkeypatch):
    name, client = bucket
    monkeypatch.setenv("GESSO_IMAGE_STORE", f"s3://{name}/async")
    response = asyncio.run(gesso.aimage_generation(NOVA, "otter", n=2, response_format="url", **aws))
    assert len({item.url for item in response.data}) == 2
    assert all(fetch(item.url).startswith(b"\x89PNG") for item in response.data)
    listed = client.list_objects_v2(Bucket=name, Prefix="async/")["Contents"]
    assert len(listed) == 2


def test_s3_upload_failure_is_a_provider_error_without_secrets(aws, bucket):
    with pytest.raises(ProviderError) as info:
        gesso.image_generation(NOVA, "otter", response_format="url", image_store="s3://no-such-bucket-here/x", **aws)
    message = str(info.value)
    assert message.startswith("could not upload the image to s3://no-such-bucket-here/x/")
    assert "NoSuchBucket" in message and info.value.provider_code == "NoSuchBucket"
    assert "s3-test-secret" not in message and "s3-test-secret" not in repr(info.value.to_dict())


def test_s3_as_a_store_of_answers_for_the_sdk_cache(aws, bucket, emulator):
    """``cache="s3://bucket/prefix"`` (and a proxy's ``result_store``): answers kept as objects under the
    prefix, read back by the next identical seeded call; a missing object is a miss, a bad URL a clear error."""
    from gesso import cache
    from gesso.errors import InvalidRequestError

    name, client = bucket
    first = gesso.image_generation(NOVA, "otter", size="320x320", cache=f"s3://{name}/answers", **aws)
    again = gesso.image_generation(NOVA, "otter", size="320x320", cache=f"s3://{name}/answers", **aws)
    assert emulator.stats()["requests"] == 1 and again.cost == 0.0
    assert again.data[0].b64_json == first.data[0].b64_json
    (listed,) = client.list_objects_v2(Bucket=name, Prefix="answers/")["Contents"]
    assert re.fullmatch(r"answers/[0-9a-f]{64}", listed["Key"])
    store = cache.open_store(f"s3://{name}/answers")
    assert store.get("0" * 64) is None
    store.delete(listed["Key"].split("/", 1)[1])
    gesso.image_generation(NOVA, "otter", size="320x320", cache=store, **aws)  # its answer gone: a call again
    assert emulator.stats()["requests"] == 2
    with pytest.raises(InvalidRequestError, match="cache: must be s3://<bucket>/<prefix>"):
        gesso.image_generation(NOVA, "otter", cache="s3://No_Such..Bucket/x", **aws)
