"""Images made once where they are made and moved by reference (issue 19 items 1-2, review of issue 27): the critic
variant and its media type, scorers that see the whole image, the renderer's writer (one writer, one retry policy, an
outage logged once), the lineage's size and hash, the in-flight byte cap and the campaign process that never decodes an
image. Scripted fakes for the campaign logic, serving's own ``finish_image`` for what a renderer sends back; the real
tiny diffusers engine in tests/test_engines.py (the variant and the writer inside its encoder pool)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import re
import threading
from pathlib import Path

import fsspec
import numpy as np
import pytest
from PIL import Image

from agents.budget import ImageBudget
from agents.config import CriticConfig, SearchConfig
from agents.critic import Critic, WeightedScorer, fit_pixels, fits, image_size
from agents.messages import ChatResult, Check, ImagePart, Intent, RenderRequest, RenderResult
from agents.planner import BeamSearchPlanner
from agents.rewriter import Rewriter
from pipelines.campaign import CampaignRunner
from pipelines.records import CampaignSpec
from pipelines.report import write_report
from pipelines.store import CampaignStore, ImageMismatch
from pipelines.testing.fakes import DictSink, FakeRenderer, ScriptedLLM
from pipelines.wire import CampaignState
from serving.images import critic_variant, finish_image, try_write_image, write_image
from serving.openai_client import chat_completion_body
from serving.retry import RetryPolicy

ROOT = Path(__file__).resolve().parents[1]
SEARCH = {"rounds": 2, "beam_width": 2, "candidates_per_beam": 3, "seeds_per_prompt": 2}


def fsspec_cat(uri: str) -> bytes:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.cat_file(path)


def noisy(side: int, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(side)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


# -- headers, the fallback, the variant ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_image_size_reads_the_header_without_pillow(fmt, monkeypatch):
    data = noisy(40, fmt)
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("decoded"))
    assert image_size(data) == (40, 40)
    assert fits(data, 40 * 40) and not fits(data, 40 * 40 - 1)
    assert fit_pixels(data, 40 * 40) is data  # already fits: returned as it is, never decoded
    assert image_size(b"GIF89a....") is None and not fits(b"GIF89a", 10**6)


def test_critic_variant_is_a_downscaled_jpeg_or_none_where_the_image_fits():
    pixels = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    small = critic_variant(pixels, 32 * 32)
    assert small[:2] == b"\xff\xd8" and image_size(small)[0] * image_size(small)[1] <= 32 * 32
    assert Image.open(io.BytesIO(small)).size == (39, 26)  # aspect kept, as fit_pixels would
    assert critic_variant(pixels, 64 * 96) is None  # fits: the critic is shown the image itself


def test_a_renderer_sends_the_fitting_image_once_and_a_stored_one_as_the_critic_image(tmp_path):
    """What finish_image hands back: a variant where the image is larger than the critic's size; where it fits, the
    image itself goes to the critic only once (in ``png``, or in ``critic_image`` when ``png`` is empty)."""
    pixels = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = noisy(64)
    big = RenderRequest(request_id="a", prompt="p", seed=1, critic_max_pixels=32 * 32)
    fitting = big.model_copy(update={"critic_max_pixels": 64 * 64})
    png, stored, critic = finish_image(pixels, data, big)
    assert (png, stored) == (data, None) and image_size(critic) == (32, 32)
    png, stored, critic = finish_image(pixels, data, fitting)
    assert (png, stored, critic) == (data, None, None)  # not sent twice
    stored_req = fitting.model_copy(update={"image_uri": str(tmp_path / "images" / "a.png")})
    png, stored, critic = finish_image(pixels, data, stored_req)
    assert png == b"" and stored.size == len(data) and critic == data  # the critic still has something to look at
    assert finish_image(pixels, b"", big) == (b"", None, None)  # withheld: nothing


# -- the media type travels with the bytes -------------------------------------------------------------------------


def test_image_parts_carry_their_own_media_type():
    assert ImagePart.of(noisy(8)).media_type == "image/png"
    assert ImagePart.of(noisy(8, "JPEG")).media_type == "image/jpeg"
    assert ImagePart.of(noisy(8, "WEBP")).media_type == "image/webp"
    with pytest.raises(ValueError, match="image/png"):  # a JPEG labelled PNG is refused, not sent
        ImagePart(data=noisy(8, "JPEG"), media_type="image/png")
    with pytest.raises(ValueError, match="not PNG, JPEG or WebP"):
        ImagePart.of(b"GIF89a....")


def test_the_critics_jpeg_variant_goes_to_an_openai_endpoint_as_image_jpeg():
    """The renderer's critic variant is a JPEG: the data URL an OpenAI-compatible endpoint receives says so (a strict
    endpoint refuses JPEG bytes sent as image/png)."""
    variant = noisy(32, "JPEG")
    checks = [Check(id="q1", question="Is it red?")]
    request = Critic(llm=None, config=CriticConfig(max_pixels=32 * 32)).build_critique_request(
        variant, Intent(id="i", text="red"), checks, request_id="c", seed=1)
    body = chat_completion_body(request, "vlm")
    (url,) = [p["image_url"]["url"] for m in body["messages"] if isinstance(m["content"], list)
              for p in m["content"] if p["type"] == "image_url"]
    head, _, data = url.partition(",")
    assert head == "data:image/jpeg;base64" and base64.b64decode(data) == variant


def test_critic_downscales_an_unfitted_image_off_the_event_loop(monkeypatch):
    """A renderer without a variant: the critic's fallback runs in a worker thread, never on the loop."""
    import agents.critic as critic_module

    threads = []
    real = critic_module.fit_pixels

    def recording(png, max_pixels):
        threads.append(threading.current_thread() is threading.main_thread())
        return real(png, max_pixels)

    monkeypatch.setattr(critic_module, "fit_pixels", recording)
    seen = []
    critic = Critic(VerdictLLM(seen), CriticConfig(max_pixels=32 * 32))
    checks = [Check(id="q1", question="Is it red?")]
    asyncio.run(critic.critique(noisy(64), Intent(id="i", text="red"), checks, request_id="c", seed=1))
    assert threads[0] is False  # the decode+resize ran in a worker thread
    assert image_size(seen[0]) == (32, 32)


# -- scorers see the image they were written for --------------------------------------------------------------------


class SizeScorer:
    """A held-out scorer that records the size of every image it is given."""

    name = "size"

    def __init__(self):
        self.sizes: list[tuple[int, int] | None] = []

    async def score(self, png: bytes, intent: Intent) -> dict[str, float]:
        self.sizes.append(image_size(png))
        return {"size": 1.0}


def test_a_critics_scorers_see_the_whole_image_and_its_vlm_the_fitted_one():
    seen: list[bytes] = []
    scorer = SizeScorer()
    critic = Critic(VerdictLLM(seen), CriticConfig(max_pixels=32 * 32), scorers=[WeightedScorer(scorer, held_out=True)])
    checks = [Check(id="q1", question="Is it red?")]
    critique, _ = asyncio.run(critic.critique(noisy(64), Intent(id="i", text="red"), checks, request_id="c", seed=1))
    assert scorer.sizes == [(64, 64)] and image_size(seen[0]) == (32, 32)
    assert critique.held_out == {"size": 1.0}


class VariantRenderer(FakeRenderer):
    """FakeRenderer's images, sent back as a renderer does (serving.images.finish_image: the critic's variant at the
    request's ``critic_max_pixels``, the image written where ``image_uri`` says)."""

    def __init__(self, size: int = 64):
        super().__init__(size=size)

    async def render(self, requests):
        out = []
        for request, result in zip(requests, await super().render(requests)):
            pixels = np.asarray(Image.open(io.BytesIO(result.png)).convert("RGB"))
            png, stored, critic = finish_image(pixels, result.png, request)
            out.append(result.model_copy(update={"png": png, "stored": stored, "critic_image": critic}))
        return out


def test_with_scorers_the_planner_asks_the_renderer_for_the_whole_image():
    """A critic with a held-out scorer (the world's judge beside a VLM): the renderer is asked for no smaller variant,
    so the scorer scores the rendered image, not the critic's downscaled copy; the VLM still sees the fitted one."""
    seen: list[bytes] = []
    scorer = SizeScorer()
    llm = VerdictLLM(seen, ScriptedLLM(FakeRenderer()))
    critic = Critic(llm, CriticConfig(max_pixels=32 * 32), scorers=[WeightedScorer(scorer, held_out=True)])
    renderer = VariantRenderer(size=64)
    planner = BeamSearchPlanner(renderer, Rewriter(llm), critic, SearchConfig(rounds=1, width=64, height=64),
                                image_sink=DictSink())
    result = asyncio.run(planner.run(Intent(id="i", text="a red apple")))
    assert scorer.sizes and set(scorer.sizes) == {(64, 64)}
    assert seen and {image_size(img) for img in seen} == {(32, 32)}
    assert all(c.critique.held_out == {"size": 1.0} for c in result.candidates)


# -- the writer ---------------------------------------------------------------------------------------------------


def test_write_image_returns_reference_size_and_hash(tmp_path):
    data = noisy(16)
    stored = write_image(str(tmp_path / "images" / "a.png"), data)
    assert (tmp_path / "images" / "a.png").read_bytes() == data
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert list((tmp_path / "images").iterdir()) == [tmp_path / "images" / "a.png"]  # no temporary left
    unreachable = tmp_path / "a-file"
    unreachable.write_text("x")
    assert try_write_image(str(unreachable / "images" / "b.png"), data) is None  # degrades: the bytes go back
    assert try_write_image(None, data) is None


def failing_puts(monkeypatch, error: Exception, failures: int) -> list[str]:
    """The object store (fsspec's memory filesystem, written like s3://) refuses the first ``failures`` PUTs with
    ``error``; returns the paths of every PUT tried."""
    from fsspec.implementations.memory import MemoryFileSystem

    real = MemoryFileSystem.pipe_file
    tried: list[str] = []

    def pipe_file(self, path, value, *args, **kwargs):
        tried.append(path)
        if len(tried) <= failures:
            raise error
        return real(self, path, value, *args, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "pipe_file", pipe_file)
    return tried


def test_a_renderer_write_the_store_refuses_for_a_moment_is_retried_and_lands(monkeypatch):
    """Two 503-like failures, then the store answers: the write is retried through serving/retry.py's policy (the
    renderer's: three tries) and lands, so the image still goes to the store once and not back through the campaign."""
    data = noisy(16)
    tried = failing_puts(monkeypatch, ConnectionResetError("the store reset the connection"), failures=2)
    stored = try_write_image("memory://retry-bucket/c/images/a.png", data)
    assert stored is not None and stored.sha256 == hashlib.sha256(data).hexdigest()
    assert len(tried) == 3
    assert fsspec_cat("memory://retry-bucket/c/images/a.png") == data


def test_a_renderer_write_past_the_policy_or_refused_for_good_goes_back_to_the_campaign(monkeypatch):
    tried = failing_puts(monkeypatch, ConnectionResetError("down"), failures=10)
    assert try_write_image("memory://retry-bucket/c/images/b.png", noisy(16)) is None
    assert len(tried) == 3  # the policy's three tries, no more
    tried.clear()
    tried = failing_puts(monkeypatch, PermissionError(13, "Access Denied"), failures=10)
    assert try_write_image("memory://retry-bucket/c/images/c.png", noisy(16)) is None
    assert len(tried) == 1  # another try cannot fix a refusal: not retried


def test_a_store_outage_costs_the_renderer_one_log_line_not_one_an_image(monkeypatch, caplog):
    """Twenty images the store refuses during an outage: one warning (with the count to come a minute later), no
    line per image and no line per retry."""
    import serving.images

    monkeypatch.setattr(serving.images, "UNWRITTEN", serving.images.UnwrittenImages(every_s=60.0))
    failing_puts(monkeypatch, ConnectionResetError("down"), failures=10**6)
    monkeypatch.setattr(serving.images, "RENDERER_WRITE_RETRY", RetryPolicy(attempts=2, backoff_s=0.0))
    with caplog.at_level(logging.INFO):
        for k in range(20):
            assert try_write_image(f"memory://outage/c/images/{k}.png", noisy(8)) is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "could not write 1 image" in warnings[0].getMessage(), [
        r.getMessage() for r in warnings]
    assert serving.images.UNWRITTEN.count == 19  # counted for the next line, a minute on


def test_every_store_write_goes_through_the_one_whole_or_absent_writer():
    """A temporary file renamed into place (or one PUT) is written once, in serving/files.py: no other module of the
    package writes store files by hand (pipe_file, a renamed temporary, fs.open for writing)."""
    root = ROOT
    patterns = [r"\.pipe_file\(", r"os\.replace\(", r"\bfs\.mv\(", r"\bfs\.open\([^)]*[\"']wb[\"']"]
    found = []
    for package in ("agents", "serving", "pipelines"):
        for path in sorted((root / package).rglob("*.py")):
            if path.relative_to(root).as_posix() == "serving/files.py":
                continue
            text = path.read_text()
            found += [f"{path.relative_to(root)}: {p}" for p in patterns if re.search(p, text)]
    assert found == [], found


# -- the campaign: references, no decoding, resume and report ------------------------------------------------------


class VerdictLLM:
    """A critic model that answers every check yes and keeps the image bytes it was shown (no decoding)."""

    def __init__(self, seen: list[bytes], inner=None):
        self.seen = seen
        self.inner = inner

    async def chat(self, request):
        if request.purpose != "critique":
            return await self.inner.chat(request)
        self.seen.extend(request.messages[-1].images())
        ids = request.json_schema["properties"]["answers"]["required"]
        parsed = {"answers": {i: True for i in ids}, "alignment": 7, "quality": 6, "feedback": "fine"}
        return ChatResult(request_id=request.request_id, text="{}", parsed=parsed)


class StoringRenderer:
    """Does what the diffusion engine's encoder pool does, at no cost: writes each image to ``image_uri`` and
    returns its reference and a critic variant (made once, before the run). ``variant=None`` sends the critic nothing
    (a renderer that does not make variants); ``stored`` replaces what is reported as written (a renderer that lies);
    ``delay_s`` keeps each call in flight that long."""

    def __init__(self, image: bytes, variant: bytes | None, write: bool = True, stored=None, delay_s: float = 0.0):
        self.image, self.variant, self.write, self.stored, self.delay_s = image, variant, write, stored, delay_s
        self.requests: list[RenderRequest] = []

    async def render(self, requests):
        self.requests.extend(requests)
        await asyncio.sleep(self.delay_s)
        out = []
        for r in requests:
            stored = try_write_image(r.image_uri, self.image) if self.write else None
            if stored is not None and self.stored is not None:
                stored = stored.model_copy(update=self.stored)
            out.append(RenderResult(request_id=r.request_id, png=b"" if stored else self.image, stored=stored,
                                    critic_image=self.variant, seed=r.seed, model="storing", width=r.width,
                                    height=r.height, steps=r.steps, batch_size=len(requests), render_seconds=0.0))
        return out

    async def info(self):
        return await FakeRenderer().info()

    async def count_tokens(self, prompts):
        return await FakeRenderer().count_tokens(prompts)


def spec(n: int, **kw) -> CampaignSpec:
    return CampaignSpec(intents=[Intent(id=f"i{k}", text=f"a red apple number {k}") for k in range(n)],
                        search=SEARCH | kw.pop("search", {}), **kw)


@pytest.mark.parametrize("renderer_writes", [True, False])
def test_campaign_keeps_references_and_never_decodes_an_image(tmp_path, monkeypatch, renderer_writes):
    """The renderer writes every image once (or, where it cannot, hands the bytes back and the campaign writes them:
    the same path, degraded); the critic sees the renderer's variant; nothing in the campaign process opens an
    image; resume and the report read the store."""
    image, variant = noisy(512), noisy(32, "JPEG")
    renderer = StoringRenderer(image, variant, write=renderer_writes)
    seen: list[bytes] = []
    store = CampaignStore(str(tmp_path / "c"))
    s = spec(3)
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("the campaign process decoded an image"))
    runner = CampaignRunner(s, s.search_config(), renderer, VerdictLLM(seen, ScriptedLLM(FakeRenderer())), store,
                            renderer_stores=True)
    status = asyncio.run(runner.run())
    assert (status.state, status.intents_done) == (CampaignState.done, 3)
    assert seen and all(img is variant or img == variant for img in seen)  # only the variant reached the critic
    assert all(r.critic_max_pixels == CriticConfig().max_pixels and r.campaign == s.campaign_id() for r in
               renderer.requests)
    assert all(r.request_id.startswith("i") for r in renderer.requests)  # the planner's own ids, no prefix
    records = list(store.iter_lineage())
    assert len(records) == len(renderer.requests)
    for rec in records:  # each image lies in the store once, under the lineage's reference, size and hash
        assert rec.image.startswith("images/") and store.read_image(rec.image.removeprefix("images/")) == image
        assert (rec.image_size, rec.image_sha256) == (len(image), hashlib.sha256(image).hexdigest())
    assert sorted(p.name for p in (tmp_path / "c" / "images").iterdir()) == sorted(
        r.image.removeprefix("images/") for r in records)
    monkeypatch.undo()
    again = asyncio.run(CampaignRunner(s, s.search_config(), renderer, VerdictLLM([], ScriptedLLM(FakeRenderer())),
                                       store, renderer_stores=True).run())
    assert again.intents_skipped == 3 and len(renderer.requests) == len(records)  # resumed: nothing re-rendered
    html = open(write_report(store)).read()
    assert html.count("data:image/png;base64,") >= 3  # the report embeds the images it read from the store


def test_a_stored_image_sent_without_a_critic_image_is_read_back_checked(tmp_path):
    """A renderer that stores the image but sends no variant: the critic is shown the image read back from the store
    (its size and sha256 checked on the way), never empty bytes."""
    image = noisy(64)
    seen: list[bytes] = []
    store = CampaignStore(str(tmp_path / "c"))
    s = spec(2)
    renderer = StoringRenderer(image, variant=None)
    status = asyncio.run(CampaignRunner(s, s.search_config(), renderer, VerdictLLM(seen, ScriptedLLM(FakeRenderer())),
                                        store, renderer_stores=True).run())
    assert (status.state, status.intents_done) == (CampaignState.done, 2), status.errors
    assert renderer.requests and all(r.image_uri for r in renderer.requests)
    assert len(seen) == len(renderer.requests) and all(img == image for img in seen)


def test_a_stored_image_that_is_not_what_the_renderer_reported_fails_its_intent(tmp_path):
    """The read-back is checked: an image whose bytes do not match the reported sha256 is an infrastructure error
    (the intent is not committed, a resume retries it), never scored."""
    s = spec(1)
    store = CampaignStore(str(tmp_path / "c"))
    renderer = StoringRenderer(noisy(64), variant=None, stored={"sha256": "0" * 64})
    status = asyncio.run(CampaignRunner(s, s.search_config(), renderer, VerdictLLM([], ScriptedLLM(FakeRenderer())),
                                        store, renderer_stores=True).run())
    assert status.intents_failed == 1 and any("ImageMismatch" in e and "sha256" in e for e in status.errors)
    assert store.done_intents() == set()
    with pytest.raises(ImageMismatch):
        store.read_stored_image(renderer_result_ref(store, renderer))


def test_the_report_shows_no_image_that_is_not_the_one_its_lineage_records(tmp_path, caplog):
    """The report reads each image anyway, so it checks it against the lineage's size and sha256: an image
    overwritten after the campaign is left out (and logged), never shown as the candidate's."""
    image = noisy(64)
    store = CampaignStore(str(tmp_path / "c"))
    s = spec(2)
    asyncio.run(CampaignRunner(s, s.search_config(), StoringRenderer(image, variant=None),
                               VerdictLLM([], ScriptedLLM(FakeRenderer())), store, renderer_stores=True).run())
    embedded = base64.b64encode(image).decode()
    before = open(write_report(store)).read().count(embedded)
    best = next(store.iter_outcomes(["i0"])).search.best_image
    other = noisy(65)
    (tmp_path / "c" / best).write_bytes(other)  # replaced behind the campaign's back
    with caplog.at_level(logging.WARNING):
        html = open(write_report(store)).read()
    assert base64.b64encode(other).decode() not in html
    assert 0 < html.count(embedded) < before
    assert any(best in r.getMessage() and "sha256" in r.getMessage() for r in caplog.records)


def renderer_result_ref(store: CampaignStore, renderer: StoringRenderer):
    """The reference (images/<name>, size, a wrong sha256) of the first image the lying renderer stored."""
    from agents.messages import StoredImage

    name = store.image_name(renderer.requests[0].request_id)
    return StoredImage(uri=f"images/{name}", size=len(renderer.image), sha256="0" * 64)


# -- the byte cap -------------------------------------------------------------------------------------------------


class MeasuringRenderer(FakeRenderer):
    """Records the most image bytes (3 a pixel, as the requests ask) inside render calls at once."""

    def __init__(self):
        super().__init__(keep_calls=False)
        self.in_flight = 0
        self.most = 0

    async def render(self, requests):
        nbytes = sum(3 * r.width * r.height for r in requests)
        self.in_flight += nbytes
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.02)
            return await super().render(requests)
        finally:
            self.in_flight -= nbytes


@pytest.mark.parametrize("cap_mib", [1, None])
def test_in_flight_image_bytes_stay_under_the_cap(tmp_path, cap_mib):
    """128² images, 8 per call (~0.4 MB): 8 intents at once would hold ~6 MB; a 1 MiB cap lets two calls in."""
    s = spec(8, concurrency=8, search={"width": 128, "height": 128},
             **({"max_image_bytes_in_flight": cap_mib * 2**20} if cap_mib else {}))
    renderer = MeasuringRenderer()
    runner = CampaignRunner(s, s.search_config(), renderer, ScriptedLLM(renderer), CampaignStore(str(tmp_path)))
    status = asyncio.run(runner.run())
    assert status.state == CampaignState.done
    if cap_mib:
        assert renderer.most <= cap_mib * 2**20 and runner.image_budget.peak <= cap_mib * 2**20
    else:  # the control: without the cap the same campaign holds more, so the assertion above can fail
        assert renderer.most > 2**20


def test_a_renderer_that_cannot_write_its_images_keeps_the_cap(tmp_path):
    """The campaign asked the renderer to store its images (only small variants would come back), but the store is
    out of its reach and the whole images come back: the reservation covered them, so the bytes held still stay
    under the cap (a reservation sized for the variants alone let every call in flight pass it by an image batch)."""
    cap = 2**20
    image = noisy(128)  # ~49 KB: 8 to a call
    s = spec(8, concurrency=8, search={"width": 128, "height": 128}, max_image_bytes_in_flight=cap)
    renderer = StoringRenderer(image, variant=None, write=False, delay_s=0.02)
    runner = CampaignRunner(s, s.search_config(), renderer, VerdictLLM([], ScriptedLLM(FakeRenderer())),
                            CampaignStore(str(tmp_path)), renderer_stores=True)
    status = asyncio.run(runner.run())
    assert status.state == CampaignState.done
    assert all(r.image_uri for r in renderer.requests)  # it was asked to store them
    assert runner.image_budget.peak <= cap, runner.image_budget.peak
    assert runner.image_budget.peak > cap // 2  # more than one call was in flight: the cap was what held it


def test_a_call_bigger_than_the_cap_runs_alone():
    request = RenderRequest(request_id="a", prompt="p", seed=1, width=64, height=64, critic_max_pixels=32 * 32)

    async def run():
        budget = ImageBudget(max_bytes=10)
        async with budget.hold([request]) as hold:
            assert budget.held == 3 * (64 * 64 + 32 * 32)  # the image and its critic variant, 3 bytes a pixel
            await hold.resize(3)
            assert budget.held == 3
        assert budget.held == 0 and budget.peak == 3 * (64 * 64 + 32 * 32)

    asyncio.run(run())
