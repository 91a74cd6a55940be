"""The typed campaign client and the CLI's conventions over it, against a scripted campaign API (FastAPI with the
real error handlers and bearer check, in-process): typed records, its own exception types, one retry policy for
idempotent calls (Retry-After honoured), submissions never sent twice once a connection was made, exit codes by
final state, Ctrl-C detaching. The same commands against the real Serve app: tests/test_serve_fake.py."""

from __future__ import annotations

import importlib.metadata
import json

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import pipelines.cli as cli_module
from pipelines.client import (
    SUBMIT_RETRY_STATUS,
    CampaignClient,
    CampaignNotFound,
    CampaignRejected,
    RetryableAnswer,
    ServerUnavailable,
    Unauthorized,
)
from pipelines.records import CampaignSpec
from pipelines.server.auth import BearerAuth
from pipelines.server.http import install_error_handlers, validation_error
from pipelines.wire import CampaignAccepted, CampaignListing, CampaignPage, CampaignState, CampaignStatus
from serving.retry import RETRY_STATUS, RetryPolicy

TOKEN = "client-token-0123456789"
FAST = RetryPolicy(attempts=4, backoff_s=0.01, max_backoff_s=1.0)


def status(state: str = "running", finished: int = 0, total: int = 3) -> CampaignStatus:
    return CampaignStatus(id="c", state=CampaignState(state), intents_total=total, intents_done=finished,
                          started_at=1.0)


class ScriptedApi:
    """A campaign API whose answers are scripted per route; records every request."""

    def __init__(self, token: str | None = None):
        self.statuses = [status("running", 1), status("running", 2), status("done", 3)]
        self.submit_answers: list[tuple[int, dict]] = []  # (status, headers) before the 202
        self.get_failures: list[tuple[int, dict]] = []
        self.requests: list[tuple[str, str]] = []
        api = FastAPI()
        install_error_handlers(api)
        auth = [Depends(BearerAuth(token))]

        @api.middleware("http")
        async def record(request: Request, call_next):
            self.requests.append((request.method, request.url.path))
            return await call_next(request)

        @api.post("/v1/campaigns", status_code=202, dependencies=auth)
        async def submit(request: Request) -> CampaignAccepted:
            if self.submit_answers:
                code, headers = self.submit_answers.pop(0)
                raise HTTPException(code, f"scripted {code}", headers=headers)
            spec = CampaignSpec.model_validate_json(await request.body())
            if spec.search.rounds == 20:
                raise validation_error([{"loc": ("search", "rounds"), "msg": "over this endpoint's limit"}])
            return CampaignAccepted(id=spec.campaign_id(), state=CampaignState.running, intents=len(spec.intents),
                                    resumed_intents=0, concurrency=1, status_url="", results_url="")

        @api.get("/v1/campaigns", dependencies=auth)
        def listing(limit: int = 50, cursor: str | None = None) -> CampaignPage:
            ids = [i for i in ("a", "b", "c") if cursor is None or i > cursor]
            items = [CampaignListing(id=i, state=CampaignState.done, intents_total=2, intents_finished=2,
                                     created_at=0.0) for i in ids[:limit]]
            return CampaignPage(campaigns=items, next_cursor=items[-1].id if len(ids) > limit else None)

        @api.get("/v1/campaigns/{cid}", dependencies=auth)
        def get_status(cid: str) -> CampaignStatus:
            if self.get_failures:
                code, headers = self.get_failures.pop(0)
                raise HTTPException(code, f"scripted {code}", headers=headers)
            if cid != "c":
                raise HTTPException(404, f"no campaign {cid!r}")
            return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

        @api.delete("/v1/campaigns/{cid}", dependencies=auth)
        def cancel(cid: str) -> CampaignStatus:
            return status("cancelled", 1)

        self.api = api

    def client(self, token: str | None = TOKEN, sleeps: list[float] | None = None, **kw) -> CampaignClient:
        record = sleeps.append if sleeps is not None else (lambda s: None)
        return CampaignClient(token=token, http=TestClient(self.api), retry=FAST, sleep=record, **kw)


def spec(**search) -> CampaignSpec:
    return CampaignSpec(name="c", intents=[{"id": f"i{k}", "text": "a red apple"} for k in range(3)], search=search)


def test_calls_return_typed_records():
    server = ScriptedApi(TOKEN)
    with server.client() as client:
        accepted = client.submit(spec())
        assert isinstance(accepted, CampaignAccepted) and accepted.id == "c" and accepted.intents == 3
        followed = list(client.follow("c"))
        assert [s.intents_finished for s in followed] == [1, 2, 3] and followed[-1].state == CampaignState.done
        assert all(isinstance(s, CampaignStatus) for s in followed)
        assert client.cancel("c").state == CampaignState.cancelled
        page = client.list(limit=2)
        assert [c.id for c in page.campaigns] == ["a", "b"] and page.next_cursor == "b"
        assert [c.id for c in client.list(limit=2, cursor=page.next_cursor).campaigns] == ["c"]


def test_wait_follows_to_the_end_and_returns_the_final_status():
    server = ScriptedApi(TOKEN)
    sleeps: list[float] = []
    with server.client(sleeps=sleeps) as client:
        final = client.wait("c", interval_s=0.25)
    assert final.state == CampaignState.done and final.intents_finished == 3
    assert sleeps == [0.25, 0.25]  # polled every interval while it ran, not after it ended


def test_errors_are_the_clients_own_types():
    server = ScriptedApi(TOKEN)
    with server.client(token=None) as anonymous:
        with pytest.raises(Unauthorized):
            anonymous.status("c")
    with server.client(token="wrong-token-0123456789") as wrong:
        with pytest.raises(Unauthorized):
            wrong.list()
    with server.client() as client:
        with pytest.raises(CampaignNotFound, match="no campaign 'nope'"):
            client.status("nope")
        with pytest.raises(CampaignRejected) as rejected:
            client.submit(spec(rounds=20))
        assert rejected.value.status == 422 and rejected.value.errors[0].field == "search.rounds"


def test_idempotent_calls_retry_5xx_and_429_honouring_retry_after_then_give_up():
    server = ScriptedApi(TOKEN)
    server.get_failures = [(503, {}), (429, {"Retry-After": "0.5"}), (502, {})]
    sleeps: list[float] = []
    retries: list[str] = []
    with server.client(sleeps=sleeps, on_retry=lambda what, exc, n, d: retries.append((what, exc))) as client:
        assert client.status("c").intents_finished == 1
    assert sleeps == [0.01, 0.5, 0.04]  # doubling, except the server's Retry-After
    assert [what for what, _ in retries] == ["GET /v1/campaigns/c"] * 3
    # on_retry is handed the client's own public type for an answer worth another try, with its status
    assert all(isinstance(exc, RetryableAnswer) for _, exc in retries)
    assert [exc.status for _, exc in retries] == [503, 429, 502]
    server.get_failures = [(500, {})] * FAST.attempts
    with server.client() as client, pytest.raises(ServerUnavailable, match="HTTP 500"):
        client.status("c")
    assert not server.get_failures  # every attempt was used


def test_a_submission_is_retried_only_when_it_cannot_have_started():
    server = ScriptedApi(TOKEN)
    server.submit_answers = [(429, {"Retry-After": "0.2"}), (503, {})]
    sleeps: list[float] = []
    with server.client(sleeps=sleeps) as client:
        assert client.submit(spec()).id == "c"  # over the limit, then no replica: nothing started, so retried
    assert sleeps == [0.2, 0.02]
    server.submit_answers = [(500, {})]
    with server.client() as client, pytest.raises(ServerUnavailable):
        client.submit(spec())  # a 500 may come after the campaign started: not sent again
    posts = [r for r in server.requests if r[0] == "POST"]
    assert len(posts) == 4  # 3 for the first submission, 1 for the second


def test_both_http_clients_retry_on_the_one_status_set():
    """The answers worth another try are written once (serving.retry); a submission retries on a part of them."""
    import pipelines.client
    import serving.openai_client

    assert pipelines.client.RETRY_STATUS is RETRY_STATUS and serving.openai_client.RETRY_STATUS is RETRY_STATUS
    assert SUBMIT_RETRY_STATUS == {429, 503} and SUBMIT_RETRY_STATUS < RETRY_STATUS


def test_a_submission_whose_connection_was_made_is_not_sent_twice():
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        raise httpx.ReadTimeout("no answer in time", request=request)

    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://x")
    with CampaignClient(http=http, retry=FAST, sleep=lambda s: None) as client:
        with pytest.raises(ServerUnavailable, match="not retried"):
            client.submit(spec())
        assert calls == ["POST"]
        with pytest.raises(ServerUnavailable, match=f"after {FAST.attempts} tries"):
            client.status("c")  # a read is idempotent: retried
        assert calls == ["POST"] + ["GET"] * FAST.attempts


# ---------------------------------------------------------------------------------------------------------------------
# The CLI over the client: exit codes, detaching, one default per option, the token in --help
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def scripted_cli(monkeypatch):
    """The CLI with its client pointed at a ScriptedApi (what `_client` builds from the environment otherwise)."""
    server = ScriptedApi(TOKEN)
    monkeypatch.setattr(cli_module.CampaignClient, "from_env",
                        classmethod(lambda cls, endpoint=None, **kw: server.client(**kw)))

    def run(*args: str):
        return CliRunner().invoke(cli_module.app, list(args), env={"COLUMNS": "300"})

    run.server = server
    return run


@pytest.mark.parametrize("final,code", [("done", 0), ("failed", cli_module.EXIT_FAILED),
                                        ("cancelled", cli_module.EXIT_CANCELLED)])
def test_watch_exits_by_the_campaigns_final_state(scripted_cli, final, code):
    scripted_cli.server.statuses = [status("running", 1), status(final, 2)]
    result = scripted_cli("watch", "c")
    assert result.exit_code == code, result.output
    assert CampaignStatus.model_validate_json(result.stdout).state == CampaignState(final)
    assert len({0, cli_module.EXIT_FAILED, cli_module.EXIT_CANCELLED, cli_module.EXIT_DETACHED, 1, 2}) == 6


def test_ctrl_c_while_following_detaches_and_says_how_to_reattach(scripted_cli, tmp_path, monkeypatch):
    def interrupt(client, campaign_id, interval_s=1.0):
        yield status("running", 1)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module.CampaignClient, "follow", interrupt)
    campaign = tmp_path / "c.jsonl"
    campaign.write_text("".join(json.dumps({"id": f"i{k}", "text": "a red apple"}) + "\n" for k in range(3)))
    for args in (["watch", "c"], ["submit", str(campaign), "--wait"]):
        result = scripted_cli(*args)
        assert result.exit_code == cli_module.EXIT_DETACHED, result.output
        assert "keeps running" in result.output and "promptbeam watch c" in result.output
    assert ("DELETE", "/v1/campaigns/c") not in scripted_cli.server.requests  # nothing was cancelled


def test_ls_prints_a_page_and_the_next_cursor(scripted_cli):
    result = scripted_cli("ls", "--limit", "2")
    assert result.exit_code == 0, result.output
    assert "a" in result.stdout and "2/2" in result.stdout and "promptbeam ls --cursor b" in result.output
    rest = scripted_cli("ls", "--cursor", "b")
    assert rest.exit_code == 0 and "--cursor" not in rest.output


def test_api_errors_exit_1_with_the_servers_reason(scripted_cli):
    result = scripted_cli("status", "nope")
    assert result.exit_code == 1 and "404" in result.output and "no campaign 'nope'" in result.output


def test_every_option_has_help_and_shared_options_one_default():
    import typer.main
    from typer.core import TyperOption

    group = typer.main.get_command(cli_module.app)
    defaults: dict[str, set] = {}
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a sub-group (models, world)
            continue
        for param in command.params:
            if isinstance(param, TyperOption) and param.name != "help":
                assert param.help, f"{name} --{param.name} has no help text"
                defaults.setdefault(param.name, set()).add(repr(param.default))
    shared = {k: v for k, v in defaults.items() if k in ("rounds", "beam_width", "candidates_per_beam",
                                                          "seeds_per_prompt", "max_images", "seed", "baseline",
                                                          "concurrency", "endpoint", "preset", "interval")}
    assert all(len(v) == 1 for v in shared.values()), shared
    assert defaults["rounds"] == {"3"}  # `search` too
    assert len(defaults) > 20  # the loop saw the options


def test_help_names_the_token_variables_and_the_exit_codes():
    for args in ([], ["submit"], ["status"], ["ls"]):
        out = CliRunner().invoke(cli_module.app, [*args, "--help"], env={"COLUMNS": "300"}).output
        assert "PROMPTBEAM_API_TOKEN" in out and "PROMPTBEAM_API_TOKEN_FILE" in out, args
    top = CliRunner().invoke(cli_module.app, ["--help"], env={"COLUMNS": "300"}).output
    assert "Exit codes" in top and "130" in top and "promptbeam watch ID" in top


# ---------------------------------------------------------------------------------------------------------------------
# One version everywhere
# ---------------------------------------------------------------------------------------------------------------------


def test_one_version_for_the_package_the_cli_and_the_api(monkeypatch):
    from pipelines import version
    from pipelines.server.ingress import api

    installed = importlib.metadata.version("promptbeam")
    result = CliRunner().invoke(cli_module.app, ["--version"])
    assert result.output.strip() == f"promptbeam {installed}"
    assert api.openapi()["info"]["version"] == installed == version.__version__

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)  # a source checkout never installed
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(version.__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert version._version() == pyproject["project"]["version"]


def test_openapi_shows_the_bearer_scheme_on_every_v1_route():
    from pipelines.server.ingress import api

    schema = api.openapi()
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": schema["components"]["securitySchemes"]["bearerAuth"][
            "description"]}
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            secured = operation.get("security") == [{"bearerAuth": []}]
            assert secured == path.startswith("/v1/"), (method, path)
    assert "/v1/campaigns" in schema["paths"] and "get" in schema["paths"]["/v1/campaigns"]
