"""The store's retries and the end of a run, with failures injected into fsspec (review of issue 28; the moto S3 server
and the full-disk cases are in tests/test_s3_store.py, ``-m faults``): one retry policy, its waits awaited on the event
loop and never slept in a worker thread, a failure for good never retried, an operation of many tries retried as a
whole only, and a run whose records take long to compile never freezing the event loop, for a bounded time."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest
from fsspec.implementations.memory import MemoryFileSystem

import pipelines.campaign as campaign_module
from pipelines.records import IntentPart
from pipelines.store import CampaignStore
from pipelines.testing.fakes import FakeRenderer
from pipelines.wire import CampaignState
from serving.retry import RetryPolicy
from serving.storage import StoreUnavailable, StoreWriteError, is_transient_store_error
from tests.test_campaign import runner, spec

FAST = RetryPolicy(attempts=4, backoff_s=0.01, max_backoff_s=0.02)


def failing(monkeypatch, method: str, error: Exception, failures: int) -> list[str]:
    """``MemoryFileSystem.<method>`` (fsspec's in-memory store, written like s3://) raises ``error`` on its first
    ``failures`` calls; returns the paths of every call."""
    real = getattr(MemoryFileSystem, method)
    calls: list[str] = []

    def flaky(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) <= failures:
            raise error
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, method, flaky)
    return calls


def memory_store(name: str, retry: RetryPolicy = FAST) -> CampaignStore:
    return CampaignStore(f"memory://store-retry-{name}-{random.getrandbits(32):08x}/c", retry=retry)


class Sleeps:
    """The backoff's clock: records each wait and the thread it was awaited on."""

    def __init__(self):
        self.waits: list[float] = []
        self.threads: list[str] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.threads.append(threading.current_thread().name)


def test_store_waits_follow_the_one_retry_policy_and_are_reported(monkeypatch):
    """Three 5xx-like failures, then the store answers: the waits are RetryPolicy's own schedule (jitter included,
    which no other policy has), each retry reaches ``on_retry`` naming the path, and the write lands."""
    policy = RetryPolicy(attempts=4, backoff_s=0.1, max_backoff_s=0.25)
    store = memory_store("policy", policy)
    notes: list[str] = []
    store.on_retry, store.sleep = notes.append, Sleeps()
    calls = failing(monkeypatch, "pipe_file", ConnectionResetError("503 Slow Down"), failures=3)
    asyncio.run(store.call(store.write_lessons, []))
    assert store.sleep.waits == [policy.delay(k) for k in range(3)] == [0.1, 0.2, 0.25]
    assert len(calls) == 4 and store.retries == 3
    assert store.fs.cat_file(store.path("lessons.json")) == b"[]"
    assert len(notes) == 3 and all(n.startswith("store_retrying: cannot write memory://") for n in notes), notes
    assert "retry 3 of 3" in notes[-1]


def test_retries_wait_on_the_event_loop_never_in_a_worker_thread(monkeypatch):
    """A campaign whose store refuses writes for a while: every backoff is awaited on the event loop, so no worker
    thread of asyncio.to_thread (about six on two cores) sleeps through an outage while other calls wait for one."""
    thread_sleeps: list[str] = []
    real_sleep = time.sleep

    def recording_sleep(seconds: float) -> None:
        if threading.current_thread() is not threading.main_thread():
            thread_sleeps.append(threading.current_thread().name)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", recording_sleep)
    failing(monkeypatch, "pipe_file", ConnectionResetError("503 Slow Down"), failures=3)
    store = memory_store("threads")
    status = asyncio.run(runner(spec(3), store).run())
    assert status.state == CampaignState.done and status.intents_done == 3
    assert store.retries == 3
    assert thread_sleeps == []


def test_a_failure_for_good_is_never_retried():
    assert not is_transient_store_error(StoreWriteError("cannot write s3://b/c/parts/i0.json: gave up"))
    assert not is_transient_store_error(PermissionError(13, "Permission denied"))
    assert not is_transient_store_error(OSError(28, "No space left on device"))
    assert is_transient_store_error(ConnectionResetError("reset")) and is_transient_store_error(TimeoutError())
    store = memory_store("final")
    tries: list[int] = []

    def operation() -> None:
        tries.append(1)
        raise StoreWriteError("cannot write memory://x: already judged final")

    with pytest.raises(StoreWriteError, match="already judged final"):
        asyncio.run(store.call(operation))
    assert tries == [1] and store.retries == 0


def test_compile_is_retried_as_a_whole_not_around_reads_that_retry(monkeypatch):
    """The store down for good while the records compile: compile is tried as often as the policy says, its part
    reads once each try — not the policy's tries squared."""
    store = memory_store("compile")
    store.create()
    part = IntentPart.model_validate_json(_one_part_json())
    store.write_part(part)
    reads = failing(monkeypatch, "cat_file", ConnectionResetError("down"), failures=10**6)
    with pytest.raises(StoreWriteError, match=r"cannot read memory://.*parts/i0.json.*gave up after 4 tries"):
        asyncio.run(store.call(store.compile, ["i0"]))
    assert len(reads) == FAST.attempts and store.retries == FAST.attempts - 1  # compile itself was retried
    assert not [p for p in store.fs.find(store.root) if ".tmp-" in p]  # each failed try left no temporary


def _one_part_json() -> bytes:
    """A committed intent, as a scripted campaign writes it."""
    s = spec(1)
    store = memory_store("source")
    asyncio.run(runner(s, store).run())
    return store.fs.cat_file(store.path("parts/i0.json"))


class SlowCompileStore(CampaignStore):
    """Compiling its records takes ``seconds`` (a slow object store), or blocks until ``release`` is set."""

    def __init__(self, uri: str, seconds: float = 0.0, release: threading.Event | None = None):
        super().__init__(uri)
        self.seconds, self.release = seconds, release

    def compile(self, intent_order):
        if self.release is not None:
            self.release.wait(10)
        time.sleep(self.seconds)
        return super().compile(intent_order)


async def loop_lateness_while(coro) -> tuple[object, float]:
    """Run ``coro`` beside a 10 ms ticker; (its result, the ticker's worst lateness in seconds)."""
    worst = 0.0

    async def ticker():
        nonlocal worst
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - t0 - 0.01)

    tick = asyncio.create_task(ticker())
    try:
        return await coro, worst
    finally:
        tick.cancel()


def test_compiling_the_records_at_a_runs_end_never_blocks_the_event_loop(tmp_path):
    """A campaign's end compiles results and lineage and writes the status: in a worker thread, so the ingress keeps
    answering status requests while a slow store takes its time."""
    store = SlowCompileStore(str(tmp_path / "c"), seconds=0.6)
    status, worst = asyncio.run(loop_lateness_while(runner(spec(2), store).run()))
    assert status.state == CampaignState.done and store.read_status().state == CampaignState.done
    assert worst < 0.3, f"the event loop stalled {worst:.2f} s while the records compiled"


def test_compiling_the_records_is_bounded_in_time(tmp_path, monkeypatch):
    """A store call that hangs at a run's end: the run gives up after RECORDS_TIMEOUT_S, says why in its status and
    is not ``done`` (its parts stay; the next run compiles them)."""
    monkeypatch.setattr(campaign_module, "RECORDS_TIMEOUT_S", 0.3)
    release = threading.Event()
    store = SlowCompileStore(str(tmp_path / "c"), release=release)
    r = runner(spec(2), store)

    async def run() -> float:
        t0 = time.perf_counter()
        try:
            with pytest.raises(TimeoutError):
                await r.run()
            return time.perf_counter() - t0
        finally:
            release.set()  # let the abandoned thread finish (asyncio.run waits for it on the way out)

    elapsed = asyncio.run(run())
    assert elapsed < 5, elapsed
    assert r.state == CampaignState.failed and store.done_intents() == {"i0", "i1"}
    assert any("could not compile the campaign's records" in e for e in r.status.errors), r.status.errors


def test_a_store_down_past_the_policy_stops_the_campaign_naming_the_path(monkeypatch):
    """Writes refused past the policy: the campaign fails with StoreWriteError naming the memory:// path and the
    tries it gave up after; the status says so."""
    store = memory_store("down", RetryPolicy(attempts=2, backoff_s=0.0))
    r = runner(spec(3), store, renderer=FakeRenderer())
    done: list[str] = []

    def refuse_after_one(outcome):
        done.append(outcome.intent_id)
        if len(done) == 1:
            failing(monkeypatch, "pipe_file", ConnectionResetError("down"), failures=10**6)

    r.on_intent_done = refuse_after_one
    with pytest.raises(StoreWriteError, match=r"cannot write memory://.*gave up after 2 tries"):
        asyncio.run(r.run())
    assert r.state == CampaignState.failed
    assert any("StoreWriteError: cannot write memory://" in e for e in r.status.errors), r.status.errors
    assert isinstance(StoreWriteError("x"), OSError) and not issubclass(StoreUnavailable, StoreWriteError)
