"""A stand-in for the Anthropic Messages API (stdlib only), to run Claude Code offline in tests.

Every request body is kept in `requests`. A request that offers tools gets the next scripted tool
call, counted by the tool results already in the conversation (a result saying the MCP server is
still connecting repeats the call). `{session_id}` in a scripted input is replaced by the first
session id seen in an earlier tool result. When the script is done, or for a request without
tools (titles, summaries), the answer is a short text.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SESSION_ID = re.compile(r"\b(?:ep_\d{3,6}|dev|plan|code)_\d{8}_[a-z0-9-]+(?:_\d+)?\b")
NOT_READY = ("still connecting", "No such tool available")
MAX_RETRIES = 20


class FakeAnthropic:
    def __init__(self, script: list[tuple[str, dict[str, Any]]]) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._send("application/json", b"{}")

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                with fake._lock:
                    fake.requests.append({"path": self.path, "body": body})
                if "count_tokens" in self.path:
                    return self._send("application/json", b'{"input_tokens": 100}')
                if not self.path.startswith("/v1/messages"):
                    return self._send("application/json", b"{}")
                block = fake.next_block(body)
                if body.get("stream"):
                    return self._send("text/event-stream", fake.sse(body, block))
                message = fake.message(body, block)
                return self._send("application/json", json.dumps(message).encode())

            def _send(self, kind: str, payload: bytes) -> None:
                self.send_response(200)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeAnthropic:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- answers --------------------------------------------------------------------------
    def next_block(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("tools"):
            return {"type": "text", "text": "ok"}
        results = tool_results(body)
        done = sum(1 for r in results if not any(s in json.dumps(r) for s in NOT_READY))
        if done < len(self.script) and len(results) < len(self.script) + MAX_RETRIES:
            name, arguments = self.script[done]
            found = SESSION_ID.search(json.dumps([r.get("content") for r in results]))
            text = json.dumps(arguments)
            if found:
                text = text.replace("{session_id}", found.group(0))
            return {"type": "tool_use", "id": f"toolu_{len(results):03d}", "name": name, "input": json.loads(text)}
        return {"type": "text", "text": f"done after {done} tool calls"}

    @staticmethod
    def message(body: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
        return {"id": "msg_fake", "type": "message", "role": "assistant", "model": body.get("model", "fake"),
                "content": [block], "stop_reason": "tool_use" if block["type"] == "tool_use" else "end_turn",
                "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 5}}

    @staticmethod
    def sse(body: dict[str, Any], block: dict[str, Any]) -> bytes:
        events = [("message_start", {"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": body.get("model", "fake"),
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 1}}})]
        if block["type"] == "tool_use":
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            stop = "tool_use"
        else:
            start = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
            stop = "end_turn"
        events += [
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": start}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                               "usage": {"output_tokens": 5}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            found += [item for item in content if isinstance(item, dict) and item.get("type") == "tool_result"]
    return found

