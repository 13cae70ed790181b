"""A real OpenAI-compatible chat-completions server for tests (http.server on 127.0.0.1, in a thread).

Answers follow a script: each POST takes the next scripted reply (status, headers, body or text); when the
script is empty it returns `default_text` as a normal completion. Every request is recorded."""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Reply:
    def __init__(self, status: int = 200, text: str | None = None, raw: str | None = None,
                 headers: dict[str, str] | None = None, finish_reason: str = "stop"):
        self.status, self.text, self.raw, self.headers, self.finish_reason = status, text, raw, headers or {}, \
            finish_reason


class OpenAIServer:
    def __init__(self, default_text: str | Callable[[str], str] = "", api_key: str | None = None):
        self.script: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.default_text, self.api_key = default_text, api_key
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append({"time": time.monotonic(), "path": self.path, "body": body,
                                            "authorization": self.headers.get("Authorization")})
                    reply = server.script.popleft() if server.script else Reply(text=server.default_reply(body))
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    reply = Reply(401, raw='{"error": {"message": "Incorrect API key provided"}}')
                if self.path != "/v1/chat/completions":
                    reply = Reply(404, raw='{"error": "not found"}')
                if reply.raw is not None:
                    payload = reply.raw
                else:
                    prompt = body["messages"][-1]["content"]
                    payload = json.dumps({
                        "id": "chatcmpl-test", "object": "chat.completion", "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                                     "message": {"role": "assistant", "content": reply.text}}],
                        "usage": {"prompt_tokens": len(prompt.split()),
                                  "completion_tokens": len((reply.text or "").split())}})
                data = payload.encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def default_reply(self, body: dict[str, Any]) -> str:
        text = self.default_text
        return text(body["messages"][-1]["content"]) if callable(text) else text

    def __enter__(self) -> OpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
