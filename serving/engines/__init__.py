"""Model engines: plain classes with no Ray import; ``serving.deployments`` wraps them for Ray Serve."""

from serving.engines.common import ModelLoadError
from serving.engines.diffusion import DiffusionEngine
from serving.engines.llm import LLMEngine

__all__ = ["DiffusionEngine", "LLMEngine", "ModelLoadError"]
