"""Object storage failing: a campaign whose store is ``s3://`` on a real S3 API served on loopback (moto's server mode,
reached through s3fs/fsspec as users would) survives the server answering 500 and then going away for seconds; a local
store that cannot be written (permission denied, a full disk) fails the campaign with an error naming the path, and a
later resume finishes it. Every part and image is whole or absent; every intent is in results once."""

from __future__ import annotations

import asyncio
import errno
import os
import statistics
import threading
import time

import pytest

from pipelines.server.local import free_port
from pipelines.store import CampaignStore
from pipelines.testing.fakes import FakeRenderer
from pipelines.wire import CampaignState
from serving.retry import RetryPolicy
from serving.storage import StoreWriteError
from tests.store_checks import assert_each_intent_once
from tests.test_campaign import runner, spec

pytestmark = [pytest.mark.faults]

BUCKET = "campaigns"
FAST_RETRY = RetryPolicy(attempts=12, backoff_s=0.2, max_backoff_s=2.0)  # ~16 s in all: outlives a 4 s outage


class FaultyS3Server:
    """moto's S3 API on 127.0.0.1 (its WSGI application served by werkzeug, as moto's own ThreadedMotoServer does, but
    wrapped here rather than subclassed) with two faults a test switches: ``failing`` answers every write with 500
    InternalError (S3's "retry this" answer; s3fs retries 503 SlowDown by itself, which would hide the store's
    policy), :meth:`outage` stops the server for some seconds (connection refused) and starts it again on the same
    port. moto keeps its buckets in process memory, so they survive the restart."""

    def __init__(self):
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        self.port = free_port()
        self.failing = threading.Event()
        self.refused_writes = 0
        self._moto = DomainDispatcherApplication(create_backend_app)
        self._server = None
        self._thread: threading.Thread | None = None

    def _app(self, environ, start_response):
        if self.failing.is_set() and environ["REQUEST_METHOD"] in ("PUT", "POST", "DELETE"):
            self.refused_writes += 1
            environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))  # a body half-received
            start_response("500 Internal Server Error", [("Content-Type", "application/xml")])
            return [b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"]
        return self._moto(environ, start_response)

    def start(self) -> None:
        from moto.moto_server.werkzeug_app import MotoRequestHandler
        from werkzeug.serving import make_server

        self._server = make_server("127.0.0.1", self.port, self._app, threaded=True, request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()  # the port is free for the restart
        self._thread.join()

    def outage(self, seconds: float) -> None:
        self.stop()
        time.sleep(seconds)
        self.start()


@pytest.fixture
def s3(monkeypatch):
    """The S3 API on loopback, credentials and endpoint from the environment as on a cluster (boto's own variables);
    botocore's own retries are kept low so the store's policy is what rides out the faults."""
    import fsspec

    server = FaultyS3Server()
    server.start()
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.port}", "AWS_MAX_ATTEMPTS": "1",
                 "AWS_RETRY_MODE": "standard"}.items():
        monkeypatch.setenv(k, v)
    fsspec.filesystem("s3").clear_instance_cache()
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    if not fs.exists(BUCKET):  # moto keeps buckets in process memory across tests
        fs.mkdir(BUCKET)
    yield server
    fsspec.filesystem("s3").clear_instance_cache()
    server.stop()


def test_s3_store_rides_out_500s_and_an_outage(s3):
    """Mid-campaign the S3 server answers every write with 500 for 2 s, then is down for 4 s: the writes are
    retried with backoff, the status says so while it happens, and the campaign ends `done` with 12/12 once. The
    campaign's event loop (where the ingress answers status requests) keeps answering: a status read every 50 ms
    from the first fault to the end is late by less than 200 ms at p95."""
    s = spec(12)
    store = CampaignStore(f"s3://{BUCKET}/runs/{s.campaign_id()}", retry=FAST_RETRY)
    r = runner(s, store, renderer=FakeRenderer(size=64))
    r.concurrency = 3
    notes: list[str] = []
    finished: list[str] = []
    r.on_intent_done = lambda outcome: finished.append(outcome.intent_id)

    answers: list[float] = []  # seconds each status read waited beyond its 50 ms sleep, plus its own time

    async def poll_status():
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.05)
            r.status.model_dump_json()
            answers.append(time.perf_counter() - t - 0.05)

    async def campaign():
        task = asyncio.create_task(r.run())
        while len(finished) < 2:
            await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        poller = asyncio.create_task(poll_status())
        s3.failing.set()
        await asyncio.sleep(2)
        notes.extend(e for e in r.status.errors if e.startswith("store_retrying"))
        s3.failing.clear()
        await asyncio.to_thread(s3.outage, 4)
        status = await task
        poller.cancel()
        return status, time.perf_counter() - t0

    status, recovery = asyncio.run(campaign())
    p95 = statistics.quantiles(answers, n=20)[18]
    print(f"\nS3 500s 2 s + outage 4 s: {s3.refused_writes} writes refused, {store.retries} retries, campaign "
          f"{status.state.value} {status.intents_done}/12, {recovery:.1f} s from the first fault to done; status "
          f"read {len(answers)} times, late p95 {p95 * 1e3:.0f} ms, max {max(answers) * 1e3:.0f} ms")
    assert len(answers) > 40 and p95 < 0.2, f"status late p95 {p95 * 1e3:.0f} ms during the outage"
    assert s3.refused_writes > 0 and store.retries > 0
    assert notes, "the status never said the store was retrying"
    assert "s3://" in notes[0] and "retry" in notes[0]
    assert status.state == CampaignState.done and status.intents_done == 12 and status.intents_failed == 0, status
    assert_each_intent_once(store, [f"i{k}" for k in range(12)], whole=True)


def test_s3_store_down_past_the_policy_fails_clearly_and_resumes(s3):
    """The server refuses writes longer than the retry policy waits: the campaign fails naming the s3:// path; once
    it answers again, a resume finishes with nothing lost or duplicated."""
    s = spec(6)
    uri = f"s3://{BUCKET}/runs/{s.campaign_id()}"
    short = RetryPolicy(attempts=3, backoff_s=0.1, max_backoff_s=0.2)
    first = runner(s, CampaignStore(uri, retry=short))
    done: list[str] = []
    first.on_intent_done = lambda outcome: (done.append(outcome.intent_id),
                                            s3.failing.set() if len(done) == 2 else None)
    with pytest.raises(StoreWriteError, match=rf"s3://{BUCKET}/runs/{s.campaign_id()}/"):
        asyncio.run(first.run())
    assert first.state == CampaignState.failed
    assert any("StoreWriteError" in e for e in first.status.errors)
    s3.failing.clear()
    store = CampaignStore(uri, retry=short)
    status = asyncio.run(runner(s, store).run())
    assert status.state == CampaignState.done and status.intents_done == 6, status
    assert_each_intent_once(store, [f"i{k}" for k in range(6)], whole=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions (the injected EACCES below still runs)")
def test_a_store_without_write_permission_fails_naming_the_path_and_resumes(tmp_path):
    s = spec(6)
    store = CampaignStore(str(tmp_path / "c"))
    first = runner(s, store)
    done: list[str] = []

    def lock_images(outcome):
        done.append(outcome.intent_id)
        if len(done) == 2:
            os.chmod(tmp_path / "c" / "images", 0o500)

    first.on_intent_done = lock_images
    try:
        with pytest.raises(StoreWriteError, match=rf"cannot write {tmp_path}/c/images/.*Permission denied"):
            asyncio.run(first.run())
    finally:
        os.chmod(tmp_path / "c" / "images", 0o700)
    assert first.state == CampaignState.failed and store.retries == 0  # permission: no pointless retry
    assert not list((tmp_path / "c").rglob("*.tmp-*"))
    status = asyncio.run(runner(s, CampaignStore(str(tmp_path / "c"))).run())
    assert status.state == CampaignState.done and status.intents_done == 6
    assert_each_intent_once(CampaignStore(str(tmp_path / "c")), [f"i{k}" for k in range(6)], whole=True)


@pytest.mark.parametrize("code,message", [(errno.ENOSPC, "No space left on device"), (errno.EACCES, "Permission denied")])
def test_a_full_disk_or_denied_write_fails_naming_the_path_and_resumes(tmp_path, monkeypatch, code, message):
    """ENOSPC or EACCES from the file system (injected into the local write: filling a real disk is not bounded, and
    root ignores permissions) fails the campaign naming the path, leaves no temp file, and a resume finishes it."""
    from fsspec.implementations.local import LocalFileSystem

    real = LocalFileSystem.pipe_file
    full = threading.Event()

    def pipe_file(self, path, value, *args, **kwargs):
        if full.is_set():
            real(self, path, value[: len(value) // 2], *args, **kwargs)  # half the bytes land, then the disk is full
            raise OSError(code, os.strerror(code))
        return real(self, path, value, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "pipe_file", pipe_file)
    s = spec(6)
    store = CampaignStore(str(tmp_path / "c"))
    first = runner(s, store)
    done: list[str] = []
    first.on_intent_done = lambda outcome: (done.append(outcome.intent_id), full.set() if len(done) == 2 else None)
    with pytest.raises(StoreWriteError, match=rf"cannot write {tmp_path}/c/.*{message}"):
        asyncio.run(first.run())
    assert first.state == CampaignState.failed and store.retries == 0
    assert not list((tmp_path / "c").rglob("*.tmp-*"))  # the half-written temp file was removed
    full.clear()
    status = asyncio.run(runner(s, CampaignStore(str(tmp_path / "c"))).run())
    assert status.state == CampaignState.done and status.intents_done == 6
    assert_each_intent_once(CampaignStore(str(tmp_path / "c")), [f"i{k}" for k in range(6)], whole=True)
