"""Helpers for tests that talk to the campaign endpoint over HTTP (both Serve tiers): typed records, never dict keys."""

from __future__ import annotations

import time

import httpx

from pipelines.records import IntentOutcome
from pipelines.wire import CampaignStatus


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


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 whose every request is answered by ``answer(method, path, headers, body)``
    returning (status, body bytes, content type). ``url`` is its root; ``close()`` stops it."""

    def __init__(self, answer):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                status, data, content_type = answer(self.command, self.path, dict(self.headers),
                                                    self.rfile.read(length) if length else b"")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
