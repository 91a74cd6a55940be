"""The front door, in Ray Serve LLM's shape (four rooms):

    configs.py   what an operator sets: AppConfig (the Serve config's ``args``), IngressConfig (its in-place
                 ``user_config``), EngineClasses; pydantic, every field described and bounded; load_app_config
                 reads a Serve config file into them
    ingress.py   the server: the FastAPI routes as a plain class (CampaignIngress) and the operator limits that
                 answer with HTTP errors, over its HTTP edge: http.py (bounded body reading, errors as JSON) and
                 auth.py (the bearer token: AuthSettings, which the client reads too, and its check)
    builder.py   the only place that applies ``serve.deployment`` to the ingress and chooses the LLM backend
    ../client.py the typed Python client over the HTTP API (CampaignClient), which the CLI prints from

and ``local.py`` starts and stops the app on this machine (a local Ray and Serve) for ``promptbeam run`` and ``serve``.

``pipelines/app.py`` keeps the import path ``pipelines.app:build_app`` that Serve configs name.
"""
