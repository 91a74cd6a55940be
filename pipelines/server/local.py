"""The Serve app on this machine: what ``promptbeam run`` and ``promptbeam serve`` start and stop.

:func:`start_local_serve` starts a Ray of this machine's CPUs, Serve's HTTP proxy on one host and port, and the app
of :func:`pipelines.server.builder.compose_app` (the application ``promptbeam``); :func:`stop_local_serve` takes them
down. Nothing else here: the app itself is the builder's, the commands and their printing are the CLI's.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.server.configs import AppConfig

APP_NAME = "promptbeam"
"""The Serve application's name (``serve status`` lists it)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_local_serve(app_config: AppConfig, deployments: dict[str, dict], port: int, host: str = "127.0.0.1") -> None:
    """Start a local Ray and deploy the app on ``host:port``; returns once every deployment is ready. ``deployments``
    are the Serve options per deployment name (a Serve config's ``deployments:`` section)."""
    import ray
    from ray import serve

    from pipelines.server.builder import compose_app

    ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False,
             configure_logging=True, logging_level="WARNING")
    serve.start(http_options={"host": host, "port": port})
    serve.run(compose_app(app_config, deployments), name=APP_NAME)


def stop_local_serve() -> None:
    """Shut down the app, Serve and the local Ray that :func:`start_local_serve` started."""
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
