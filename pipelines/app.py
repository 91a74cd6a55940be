"""The Serve application's import path: ``deploy/serve_config*.yaml`` name ``pipelines.app:build_app``.

The front door lives in :mod:`pipelines.server` (configs, the ingress, the builder) and :mod:`pipelines.client`; this
module re-exports what callers have always imported from here.
"""

from pipelines.server.builder import INGRESS_OPTIONS, build_app, compose_app
from pipelines.server.configs import AppConfig, EngineClasses, IngressConfig
from pipelines.server.ingress import CampaignIngress, api, check_limits

__all__ = ["INGRESS_OPTIONS", "AppConfig", "CampaignIngress", "EngineClasses", "IngressConfig", "api", "build_app",
           "check_limits", "compose_app"]
