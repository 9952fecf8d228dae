"""Identities are cheap: they share one botocore client per endpoint configuration (and its connections) and one
loader of botocore's data, a new identity is resolved off the event loop and only once however many calls
ask for it at once, and the cache of identities is bounded by their estimated bytes. (bench/identities.py
measures what they cost; these tests check the behaviour, not timings.)"""

from __future__ import annotations

import asyncio
import threading
import time

import attrs
import pytest

import gesso
from gesso import errors
from gesso_bedrock import auth, transport
from gesso_bedrock.emulator import Emulator
from gesso_bedrock.target import AwsCredentials, Target

NOVA = "bedrock/amazon.nova-canvas-v1:0"
TENANTS = {f"TENANT{n}": f"tenant-secret-{n}" for n in range(8)}


@pytest.fixture
def tenants():
    """The emulator, checking the signatures of eight tenants' keys."""
    with Emulator(port=0, credentials=TENANTS) as emu:
        yield emu


def tenant(emulator, n: int) -> dict:
    return {
        "aws_bedrock_runtime_endpoint": emulator.url,
        "aws_access_key_id": f"TENANT{n}",
        "aws_secret_access_key": f"tenant-secret-{n}",
        "aws_region_name": "us-east-1",
    }


def target(n: int, **extra) -> Target:
    keys = AwsCredentials(access_key_id=f"TENANT{n}", secret_access_key=f"tenant-secret-{n}")
    return Target(model_id="amazon.nova-canvas-v1:0", credentials=keys, endpoint_url="http://127.0.0.1:9", **extra)


@pytest.fixture
def resolutions(monkeypatch):
    """Each identity resolution's access key and thread; ``gates[key]``, if set, holds that key's resolution
    until it is set."""
    seen: list[tuple[str | None, threading.Thread]] = []
    gates: dict[str, threading.Event] = {}
    original = auth.credentials

    def recorded(creds, **kwargs):
        seen.append((creds.access_key_id, threading.current_thread()))
        gate = gates.get(creds.access_key_id)
        if gate is not None:
            assert gate.wait(10), "the gate was never opened"
        return original(creds, **kwargs)

    monkeypatch.setattr(auth, "credentials", recorded)
    return seen, gates


def test_identities_share_one_client_its_connections_and_the_loaded_data(tenants):
    for n in range(3):
        assert gesso.image_generation(NOVA, "x", **tenant(tenants, n)).data
    assert len(transport._clients) == 1  # one endpoint configuration
    routes = list(transport._routes.values())
    assert len(routes) == 3
    assert len({id(route.origin) for route in routes}) == 1  # one pool of connections
    assert [route.credentials.access_key for route in routes] == ["TENANT0", "TENANT1", "TENANT2"]
    assert {request.signed_by.access_key_id for request in tenants.requests} == {"TENANT0", "TENANT1", "TENANT2"}
    with auth.session(None) as default:
        loader = default.get_component("data_loader")
    with auth.session(None) as again:
        assert again is default  # one session per profile
    assert auth.new_session("any-profile").get_component("data_loader") is loader


def test_a_new_identitys_async_call_resolves_it_off_the_event_loop(tenants, resolutions):
    seen, gates = resolutions
    gates["TENANT1"] = threading.Event()

    async def calls():
        first = asyncio.create_task(gesso.aimage_generation(NOVA, "x", **tenant(tenants, 1)))
        while not seen:  # tenant 1 is being resolved, held at its gate
            await asyncio.sleep(0.001)
        # the loop is free meanwhile: another new identity's call goes through
        other = await gesso.aimage_generation(NOVA, "x", **tenant(tenants, 2))
        assert not first.done()
        gates["TENANT1"].set()
        return await first, other

    assert all(response.data for response in asyncio.run(calls()))
    assert [key for key, _ in seen] == ["TENANT1", "TENANT2"]
    assert all(thread is not threading.main_thread() for _, thread in seen)


@pytest.mark.parametrize("how", ["async", "threads"])
def test_concurrent_first_calls_of_one_identity_resolve_it_once(tenants, resolutions, how):
    seen, gates = resolutions
    gates["TENANT3"] = threading.Event()
    kwargs = tenant(tenants, 3)
    if how == "async":

        async def calls():
            tasks = [asyncio.create_task(gesso.aimage_generation(NOVA, "x", **kwargs)) for _ in range(20)]
            await asyncio.sleep(0.05)  # every call is waiting for the one resolution
            gates["TENANT3"].set()
            return await asyncio.gather(*tasks)

        out = asyncio.run(calls())
    else:
        out = []
        threads = [
            threading.Thread(target=lambda: out.append(gesso.image_generation(NOVA, "x", **kwargs))) for _ in range(20)
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.05)
        gates["TENANT3"].set()
        for thread in threads:
            thread.join()
    assert len(out) == 20 and all(response.data for response in out)
    assert [key for key, _ in seen] == ["TENANT3"]
    assert len(transport._routes) == 1 and not transport._pending


def test_a_failed_resolution_reaches_every_waiter_and_is_not_kept(monkeypatch):
    async def calls():
        pending = [transport.aget_route(target(0), model="m") for _ in range(5)]
        return await asyncio.gather(*pending, return_exceptions=True)

    failures = asyncio.run(calls())
    assert all(isinstance(failure, errors.InvalidRequestError) for failure in failures)
    assert all(failure.param == "aws_region_name" for failure in failures)
    assert not transport._routes and not transport._pending
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert transport.get_route(target(0), model="m").region == "eu-west-1"


def test_an_interrupted_resolution_is_tried_again_by_its_waiters(monkeypatch):
    original, started, go = auth.credentials, threading.Event(), threading.Event()
    interrupted = []

    def first_interrupted(creds, **kwargs):
        if not interrupted:
            interrupted.append(threading.current_thread())
            started.set()
            assert go.wait(10)
            raise KeyboardInterrupt
        return original(creds, **kwargs)

    monkeypatch.setattr(auth, "credentials", first_interrupted)
    outcomes = {}

    def call(name):
        try:
            outcomes[name] = transport.get_route(target(0, region="us-east-1"), model="m").credentials.access_key
        except KeyboardInterrupt:
            outcomes[name] = "interrupted"

    threads = {name: threading.Thread(target=call, args=(name,)) for name in ("owner", "waiter")}
    threads["owner"].start()
    assert started.wait(10)
    threads["waiter"].start()
    time.sleep(0.05)  # the waiter waits for the owner's resolution
    go.set()
    for thread in threads.values():
        thread.join(10)
    assert outcomes == {"owner": "interrupted", "waiter": "TENANT0"}
    assert interrupted == [threads["owner"]] and not transport._pending


def test_the_identity_cache_is_bounded_by_memory(monkeypatch):
    monkeypatch.setattr(transport, "IDENTITY_CACHE_BYTES", 3 * transport.STATIC_IDENTITY_BYTES)
    first = transport.get_route(target(0, region="us-east-1"), model="m")
    for n in (1, 2):
        transport.get_route(target(n, region="us-east-1"), model="m")
    assert transport.get_route(target(0, region="us-east-1"), model="m") is first  # cached, and now the newest
    for n in (3, 4):
        transport.get_route(target(n, region="us-east-1"), model="m")
    held = [route.credentials.access_key for route in transport._routes.values()]
    assert held == ["TENANT0", "TENANT3", "TENANT4"]  # the least recently used went first
    assert transport._routes_bytes == 3 * transport.STATIC_IDENTITY_BYTES
    assert len(transport._clients) == 1


def test_a_refreshed_identity_is_estimated_larger():
    from botocore.credentials import Credentials, RefreshableCredentials

    static = transport.get_route(target(0, region="us-east-1"), model="m")
    refreshed = RefreshableCredentials.create_from_metadata(
        {"access_key": "A", "secret_key": "S", "token": "T", "expiry_time": "2999-01-01T00:00:00+00:00"},
        refresh_using=dict,
        method="test",
    )
    assert isinstance(static.credentials, Credentials)
    assert transport._estimated_bytes(static) == transport.STATIC_IDENTITY_BYTES
    assert transport._estimated_bytes(attrs.evolve(static, credentials=refreshed)) == transport.REFRESHED_IDENTITY_BYTES


def test_get_client_signs_as_the_identity(tenants):
    import json

    keys = AwsCredentials(access_key_id="TENANT5", secret_access_key="tenant-secret-5")
    where = Target(model_id="amazon.nova-canvas-v1:0", credentials=keys, endpoint_url=tenants.url, region="us-east-1")
    client = transport.get_client(where, model="m")
    body = json.dumps({"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"}})
    assert json.loads(client.invoke_model(modelId="amazon.nova-canvas-v1:0", body=body)["body"].read())["images"]
    assert tenants.requests[-1].signed_by.access_key_id == "TENANT5"
