"""Loaded at interpreter start when this folder is on PYTHONPATH (set by ``torchvision_shim.ensure_installed``), so
the shim also reaches processes that vLLM spawns (model inspection, engine core)."""
try:
    from serving.compat.torchvision_shim import install

    install()
except Exception:  # never break interpreter start-up over a compatibility layer
    pass
