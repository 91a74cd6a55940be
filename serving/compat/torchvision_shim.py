"""Run vision-language models on the CPU build of vLLM, where torchvision cannot be installed.

Why this exists: PyPI's torchvision wheels are CUDA builds that fail to import beside the CPU torch
(``operator torchvision::nms does not exist``). Without torchvision, transformers 5 still has a PIL implementation of
every image processor (``image_processing_pil_<model>``), but some code imports the torchvision one by module path:
vLLM's ``qwen2_vl.py`` does ``from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize``, and
``AutoProcessor`` builds a torchvision-only video processor. Both fail, and vLLM reports the model as "failed to be
inspected".

What it does, only when torchvision is missing (and never on a GPU machine, where torchvision is present):

1. an import hook maps ``transformers.models.X.image_processing_X`` to its ``image_processing_pil_X`` sibling, with
   the torchvision class names aliased to the PIL classes;
2. ``Qwen2VLVideoProcessor``-style video processors that need torchvision are replaced by a stub that raises a clear
   error if a video is ever passed (promptbeam only sends images).

``ensure_installed()`` also puts a ``sitecustomize`` on ``PYTHONPATH`` so child processes get the same hook.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import types
from pathlib import Path

_IMAGE_PROC = re.compile(r"^transformers\.models\.(?P<model>[a-z0-9_]+)\.image_processing_(?P=model)$")
_SITE_DIR = str(Path(__file__).with_name("_site"))
_installed = False


def shim_needed() -> bool:
    """Whether to install the shim. ``PROMPTBEAM_TORCHVISION_SHIM=0|1`` overrides detection."""
    flag = os.environ.get("PROMPTBEAM_TORCHVISION_SHIM")
    if flag in ("0", "1"):
        return flag == "1"
    # find_spec only: importing a broken torchvision here would poison the interpreter.
    return importlib.util.find_spec("torchvision") is None


class _PilAliasLoader(importlib.abc.Loader):
    def __init__(self, pil_name: str):
        self.pil_name = pil_name

    def create_module(self, spec):
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        pil = importlib.import_module(self.pil_name)
        module.__dict__.update({k: v for k, v in pil.__dict__.items() if not k.startswith("__")})
        for name, value in pil.__dict__.items():
            if isinstance(value, type) and name.endswith("Pil"):
                module.__dict__.setdefault(name[: -len("Pil")], value)
        module.__promptbeam_shim__ = self.pil_name


class _PatchAfterExecLoader(importlib.abc.Loader):
    """Wraps a module's real loader and runs ``patch(module)`` right after the module executes."""

    def __init__(self, loader, patch):
        self.loader, self.patch = loader, patch

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.patch(module)


class _ShimFinder(importlib.abc.MetaPathFinder):
    """Resolve ``image_processing_X`` to ``image_processing_pil_X`` when the latter exists, and patch
    ``transformers.processing_utils`` as it is imported (so transformers is never imported just for the shim)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "transformers.processing_utils":
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchAfterExecLoader(spec.loader, _patch_processing_utils)
            return spec
        m = _IMAGE_PROC.match(fullname)
        if not m:
            return None
        pil_name = f"transformers.models.{m['model']}.image_processing_pil_{m['model']}"
        try:
            if importlib.util.find_spec(pil_name) is None:
                return None
        except ModuleNotFoundError:
            return None
        return importlib.machinery.ModuleSpec(fullname, _PilAliasLoader(pil_name))


_no_video_cls = None


def no_video_processor_class():
    """A stand-in for a torchvision-only video processor. Images work; a video raises a clear error.

    Built on first use because its base class (for the processor's JSON serialisation) lives in transformers."""
    global _no_video_cls
    if _no_video_cls is None:
        from transformers.processing_utils import VideosKwargs
        from transformers.utils import PushToHubMixin

        class NoVideoProcessor(PushToHubMixin):
            merge_size = 2
            temporal_patch_size = 2
            valid_kwargs = VideosKwargs
            model_input_names: list[str] = []

            def __call__(self, *args, **kwargs):
                raise RuntimeError("video input needs torchvision, which is not installed on this CPU machine")

            def to_dict(self):
                return {"video_processor_type": "NoVideoProcessor"}

        _no_video_cls = NoVideoProcessor
    return _no_video_cls


class NoVideoAutoProcessor:
    """Takes ``AutoVideoProcessor``'s place in the processor loader: always the stub."""

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        return no_video_processor_class()()


def _patch_processing_utils(processing_utils: types.ModuleType) -> None:
    """Point the processor loader's video slot at the stub (``AutoVideoProcessor`` itself is a torchvision dummy)."""
    mapping = processing_utils.MODALITY_TO_AUTOPROCESSOR_MAPPING
    mapping._MAPPING_NAMES = {**mapping._MAPPING_NAMES, "video_processor": (__name__, "NoVideoAutoProcessor")}

    # The processor checks each part against its base class; the video base class is itself torchvision-only.
    mixin = processing_utils.ProcessorMixin
    original_check = mixin.check_argument_for_proper_class

    def check_argument_for_proper_class(self, argument_name, argument):
        if isinstance(argument, no_video_processor_class()):
            return type(argument)
        return original_check(self, argument_name, argument)

    mixin.check_argument_for_proper_class = check_argument_for_proper_class


def install() -> bool:
    """Install the hook in this process if needed. Returns whether it is active."""
    global _installed
    if _installed:
        return True
    if not shim_needed():
        return False
    if "transformers.processing_utils" in sys.modules:  # imported before the hook: patch in place
        _patch_processing_utils(sys.modules["transformers.processing_utils"])
    sys.meta_path.insert(0, _ShimFinder())
    _installed = True
    return True


def ensure_installed() -> bool:
    """Install here and in every child process (through ``sitecustomize`` on ``PYTHONPATH``)."""
    active = install()
    if active:
        parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        repo_root = str(Path(__file__).resolve().parents[2])
        for p in (repo_root, _SITE_DIR):  # the site hook imports serving.compat, so its root must be importable
            if p not in parts:
                parts.insert(0, p)
        os.environ["PYTHONPATH"] = os.pathsep.join(parts)
    return active
