"""`cong serve MODEL`: a local server of enough of the OpenAI chat-completions protocol for the pairwise judge
(cong.evaluation.judge), so that the judge runs for real without a commercial API or a vLLM deployment.

Served: `GET /v1/models`, `GET /health`, and `POST /v1/chat/completions` with `messages`, `max_tokens` (or
`max_completion_tokens`), `temperature` (0 decodes greedily), `top_p` and `seed`; one choice, no streaming, no
tools. A request is answered after the previous one finished (one model, one decoding at a time). With an API
key set, requests need `Authorization: Bearer <key>`. Errors come back as the protocol's JSON error objects.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cong.progress import log

STAGE = "serve"
DEFAULT_MAX_TOKENS = 256


class RequestError(Exception):
    """A bad request: sent back as a 400 with the protocol's error object."""


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int


class ChatModel:
    """A causal LM and its chat template, decoding one conversation at a time with cong's engine."""

    def __init__(self, ref: str, name: str):
        from cong.models import eos_ids, load_model, load_tokenizer

        self.name, self.tokenizer, self.model = name, load_tokenizer(ref), load_model(ref)
        self.eos = eos_ids(self.model, self.tokenizer)
        self.lock = threading.Lock()

    def complete(self, request: dict[str, Any]) -> Completion:
        from cong.decoding.generate import DecodeParams, decode

        messages = _messages(request)
        max_tokens = request.get("max_completion_tokens", request.get("max_tokens", DEFAULT_MAX_TOKENS))
        temperature = request.get("temperature", 1.0)
        top_p = request.get("top_p", 1.0)
        seed = request.get("seed", 0)
        for field, value, ok in (
            ("max_tokens", max_tokens, isinstance(max_tokens, int) and 1 <= max_tokens <= 32768),
            ("temperature", temperature, isinstance(temperature, int | float) and 0 <= temperature <= 2),
            ("top_p", top_p, isinstance(top_p, int | float) and 0 < top_p <= 1),
            ("seed", seed, isinstance(seed, int) and seed >= 0),
        ):
            if not ok:
                raise RequestError(f"{field} {value!r} is out of range")
        if request.get("stream"):
            raise RequestError("stream is not supported by this server")
        if request.get("n", 1) != 1:
            raise RequestError("only n = 1 is supported")
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        params = DecodeParams(
            max_new_tokens=max_tokens,
            temperature=max(float(temperature), 1e-6),
            top_p=float(top_p),
            greedy=temperature == 0,
        )
        with self.lock:
            (out,) = decode(
                self.model,
                [ids],
                params,
                eos_token_ids=self.eos,
                pad_token_id=self.tokenizer.pad_token_id,
                seeds=[seed],
            )
        return Completion(
            text=self.tokenizer.decode(out, skip_special_tokens=True),
            finish_reason="length" if len(out) == max_tokens else "stop",
            prompt_tokens=len(ids),
            completion_tokens=len(out),
        )


def _request(body: bytes) -> dict[str, Any]:
    try:
        request = json.loads(body)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise RequestError(f"the body is not valid JSON: {e}") from None
    if not isinstance(request, dict):
        raise RequestError("the body must be a JSON object")
    return request


def _messages(request: dict[str, Any]) -> list[dict[str, str]]:
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {role, content} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise RequestError(f"messages[{i}].role must be system, user or assistant")
        if not isinstance(m.get("content"), str):
            raise RequestError(f"messages[{i}].content must be a string")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _handler(model: ChatModel, api_key: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            log(STAGE, f"{self.address_string()} {format % args}")

        def _send(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: HTTPStatus, message: str, kind: str) -> None:
            self._send(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})

        def _authorised(self) -> bool:
            if api_key is None or self.headers.get("Authorization") == f"Bearer {api_key}":
                return True
            self._error(HTTPStatus.UNAUTHORIZED, "missing or wrong API key", "invalid_request_error")
            return False

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(HTTPStatus.OK, {"status": "ok"})
            elif not self._authorised():
                return
            elif self.path == "/v1/models":
                entry = {"id": model.name, "object": "model", "created": 0, "owned_by": "cong"}
                self._send(HTTPStatus.OK, {"object": "list", "data": [entry]})
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no route {self.path}", "invalid_request_error")

        def do_POST(self) -> None:
            if not self._authorised():
                return
            if self.path != "/v1/chat/completions":
                self._error(HTTPStatus.NOT_FOUND, f"no route {self.path}", "invalid_request_error")
                return
            try:
                request = _request(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if request.get("model") not in (None, model.name):
                    raise RequestError(f"model {request.get('model')!r} is not served here; this serves {model.name!r}")
                completion = model.complete(request)
            except RequestError as e:
                self._error(HTTPStatus.BAD_REQUEST, str(e), "invalid_request_error")
                return
            except Exception as e:  # the client gets an answer; the server keeps serving
                log(STAGE, f"error: {e!r}")
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"the server failed: {e}", "server_error")
                return
            self._send(
                HTTPStatus.OK,
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model.name,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": completion.text},
                            "finish_reason": completion.finish_reason,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": completion.prompt_tokens,
                        "completion_tokens": completion.completion_tokens,
                        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
                    },
                },
            )

    return Handler


def make_server(model: ChatModel, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None):
    """A ThreadingHTTPServer (not started) serving `model`; port 0 picks a free port (`server.server_port`)."""
    return ThreadingHTTPServer((host, port), _handler(model, api_key))
