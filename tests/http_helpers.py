"""Helpers for tests that talk to the campaign endpoint over HTTP (both Serve tiers): typed records, never dict keys."""

from __future__ import annotations

import time

import httpx

from pipelines.records import CampaignStatus, IntentOutcome


def status(client: httpx.Client, cid: str) -> CampaignStatus:
    return CampaignStatus.model_validate_json(client.get(f"/v1/campaigns/{cid}").content)


def wait_done(client: httpx.Client, cid: str, timeout: float = 600, poll_s: float = 0.5) -> CampaignStatus:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = status(client, cid)
        if st.state != "running":
            return st
        time.sleep(poll_s)
    raise TimeoutError(f"campaign {cid} still running after {timeout}s")


def intents(n: int, prefix: str = "i") -> list[dict]:
    return [{"id": f"{prefix}{k}", "text": f"a photo of {k + 1} red apples on a table"} for k in range(n)]


def outcomes(resp: httpx.Response) -> list[IntentOutcome]:
    """The results stream's lines as IntentOutcome records."""
    return [IntentOutcome.model_validate_json(line) for line in resp.text.splitlines()]
