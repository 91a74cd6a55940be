"""deploy/ files agree with the code."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines.app import AppConfig

ROOT = Path(__file__).resolve().parents[1]


def test_serve_config_imports_build_app_with_valid_args():
    config = yaml.safe_load((ROOT / "deploy" / "serve_config.yaml").read_text())
    (app,) = config["applications"]
    assert app["import_path"] == "pipelines.app:build_app"
    module, attr = app["import_path"].split(":")
    import importlib

    assert callable(getattr(importlib.import_module(module), attr))
    args = AppConfig.model_validate(app["args"])  # unknown or out-of-range keys fail here
    assert args.profile == "tiny"
    assert args.diffusion.max_ongoing_requests >= args.diffusion.max_batch_size
