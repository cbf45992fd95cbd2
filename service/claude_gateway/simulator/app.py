"""The ASGI app: routing, auth, `/v1/messages` (JSON and SSE), count_tokens, models, batches, files, `/_sim/*`."""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from claude_gateway.simulator.batches import BatchStore, JSONObject
from claude_gateway.simulator.config import SimulatorConfig
from claude_gateway.simulator.controls import Controls, parse_controls
from claude_gateway.simulator.errors import SimError, error_body, invalid_request
from claude_gateway.simulator.files import FILES_BETA, FileStore, read_chunks
from claude_gateway.simulator.generation import EMPTY_COMPLETION, Completion, generate
from claude_gateway.simulator.ids import new_id
from claude_gateway.simulator.listing import page
from claude_gateway.simulator.models import CATALOGUE, MODELS, model_info
from claude_gateway.simulator.multipart import boundary_of
from claude_gateway.simulator.peer import Peer, Receive
from claude_gateway.simulator.request import MessagesRequest, parse_betas, parse_messages_request
from claude_gateway.simulator.sse import error_event, plan_stream
from claude_gateway.simulator.stats import Stats
from claude_gateway.simulator.tokens import InputUsage, PromptCache, count_input_tokens

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
Headers = dict[bytes, bytes]
# A route's handler; `ids` are the path's `{id}` parts, in order.
Handler = Callable[[Scope, Receive, Send, str, tuple[str, ...]], Awaitable[None]]

# Anthropic's limit on a Messages API request body.
MAX_REQUEST_BYTES = 32 * 1024 * 1024
# `hang`: far past any client's timeout (the SDK's default is 600 s); ends early when the client leaves.
HANG_S = 3600.0
# `midstream_*` faults strike after this many output tokens: enough that the client has seen text.
MIDSTREAM_FAULT_AFTER_TOKENS = 3
# Tokens due together are written together, at most one write per stream per interval: Anthropic's own deltas
# arrive in bursts of this order, and it keeps thousands of concurrent streams to a manageable wake-up rate.
MIN_WRITE_INTERVAL_S = 0.025
# `retry-after` of a simulated 429 when the request names none.
DEFAULT_RETRY_AFTER_S = 1.0

_VERSION = re.compile(rb"\d{4}-\d{2}-\d{2}")
_JSON = b"application/json"
_JSONL = b"application/x-jsonl"
_ID = r"([^/]+)"
_FAULT_ERRORS: dict[str, tuple[int, str, str]] = {
    "rate_limit": (
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization (simulated).",
    ),
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "midstream_overloaded": (529, "overloaded_error", "Overloaded"),
    "server_error": (500, "api_error", "Internal server error"),
    "auth": (401, "authentication_error", "invalid x-api-key"),
    "permission": (403, "permission_error", "Your API key does not have permission to use the specified resource."),
    "not_found": (404, "not_found_error", "model: {model}"),
    "bad_request": (400, "invalid_request_error", "Simulated bad request."),
}


class SimulatedDrop(Exception):
    """Raised after a response has started to make the server drop the connection without a clean end."""


def _hide_simulated_drops(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, SimulatedDrop)


class SimulatorApp:
    """A pure ASGI app; `stats` and `cache` are public so that an in-process test can look at them."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.cache = PromptCache()
        self.batches = BatchStore(config.batch_delay_s)
        self.files = FileStore()
        self._api_key = None if config.api_key is None else config.api_key.encode()
        # Exact paths first (the hot path is one dict lookup), then paths with ids.
        self._routes: dict[str, dict[str, Handler]] = {
            "/": {"GET": self._root, "HEAD": self._root},
            "/v1/messages": {"POST": self._messages},
            "/v1/messages/count_tokens": {"POST": self._count_tokens},
            "/v1/messages/batches": {"POST": self._create_batch, "GET": self._list_batches},
            "/v1/models": {"GET": self._models},
            "/v1/files": {"POST": self._upload_file, "GET": self._list_files},
            "/_sim/stats": {"GET": self._sim_stats},
            "/_sim/reset": {"POST": self._sim_reset},
        }
        self._patterns: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
            (re.compile(f"/v1/models/{_ID}"), {"GET": self._model}),
            (re.compile(f"/v1/messages/batches/{_ID}"), {"GET": self._get_batch, "DELETE": self._delete_batch}),
            (re.compile(f"/v1/messages/batches/{_ID}/cancel"), {"POST": self._cancel_batch}),
            (re.compile(f"/v1/messages/batches/{_ID}/results"), {"GET": self._batch_results}),
            (re.compile(f"/v1/files/{_ID}"), {"GET": self._file_metadata, "DELETE": self._delete_file}),
            (re.compile(f"/v1/files/{_ID}/content"), {"GET": self._file_content}),
        ]

    def close(self) -> None:
        """Removes the uploaded files from disk."""
        self.files.close()

    def _route(self, path: str) -> tuple[dict[str, Handler] | None, tuple[str, ...]]:
        methods = self._routes.get(path)
        if methods is not None:
            return methods, ()
        for pattern, methods in self._patterns:
            match = pattern.fullmatch(path)
            if match is not None:
                return methods, match.groups()
        return None, ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        request_id = new_id("req")
        methods, ids = self._route(scope["path"])
        try:
            if methods is None:
                raise SimError(404, "not_found_error", "Not Found")
            handler = methods.get(scope["method"])
            if handler is None:
                allow = ", ".join(methods).encode()
                raise SimError(405, "invalid_request_error", "Method Not Allowed", ((b"allow", allow),))
            await handler(scope, receive, send, request_id, ids)
        except SimError as error:
            await self._send_json(send, error.status, error.body(request_id), request_id, error.headers)

    # -- responses ---------------------------------------------------------------------------------------------

    async def _send_json(
        self,
        send: Send,
        status: int,
        body: bytes,
        request_id: str,
        extra_headers: tuple[tuple[bytes, bytes], ...] = (),
        *,
        counted: bool = True,
    ) -> None:
        if counted:
            self.stats.responses[status] += 1
        headers = [
            (b"content-type", _JSON),
            (b"content-length", b"%d" % len(body)),
            (b"request-id", request_id.encode()),
            *extra_headers,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # -- the Anthropic API -------------------------------------------------------------------------------------

    def _begin_api_request(self, scope: Scope) -> Headers:
        """Counts and records the request, then checks its key and version, as every `/v1` route does."""
        self.stats.requests += 1
        self.stats.last_headers = scope["headers"]
        query = scope["query_string"].decode("latin-1")
        self.stats.last_path = f"{scope['method']} {scope['path']}" + (f"?{query}" if query else "")
        headers: Headers = dict(scope["headers"])
        key = headers.get(b"x-api-key")
        if key is None:
            authorization = headers.get(b"authorization", b"")
            if authorization[:7].lower() == b"bearer ":
                key = authorization[7:].strip()
        if not key:
            raise SimError(401, "authentication_error", "x-api-key header is required")
        if self._api_key is not None and not hmac.compare_digest(key, self._api_key):
            raise SimError(401, "authentication_error", "invalid x-api-key")
        version = headers.get(b"anthropic-version")
        if version is None:
            raise invalid_request("anthropic-version: header is required")
        if not _VERSION.fullmatch(version.strip()):
            raise invalid_request(f"anthropic-version: {version.decode('latin-1')!r} is not a version (YYYY-MM-DD)")
        return headers

    async def _read_json(self, receive: Receive, headers: Headers) -> tuple[bytes, Any]:
        media_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if media_type != _JSON:
            raise invalid_request("Content-Type must be application/json")
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > MAX_REQUEST_BYTES:
            raise SimError(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
        raw = await _read_body(receive)
        try:
            return raw, orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise invalid_request(f"There was an issue with the request body: invalid JSON ({exc})") from None

    async def _messages(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, ids: tuple[str, ...]
    ) -> None:
        headers = self._begin_api_request(scope)
        raw, body = await self._read_json(receive, headers)
        self.stats.last_request = body
        request = parse_messages_request(body, betas=_betas(scope))
        controls = parse_controls(headers, request.last_user_text())
        fault = controls.fault
        if fault in _FAULT_ERRORS and (fault != "midstream_overloaded" or not request.stream):
            raise _fault_error(fault, controls, request)
        peer = Peer(receive)
        try:
            if fault == "hang" and not await peer.sleep(HANG_S):
                return
            usage = self.cache.account(request, has_cache_control=b'"cache_control"' in raw)
            completion = self._complete(request, controls)
            ttft_s, interval_s = self._pace(controls)
            if request.stream:
                await self._stream(send, peer, request, usage, completion, controls, request_id, ttft_s, interval_s)
            else:
                await self._message(send, peer, request, usage, completion, controls, request_id, ttft_s, interval_s)
        finally:
            peer.close()

    def _complete(self, request: MessagesRequest, controls: Controls) -> Completion:
        if controls.fault == "empty":
            return EMPTY_COMPLETION
        wanted = self.config.default_output_tokens if controls.tokens is None else controls.tokens
        return generate(request, seed=self.config.seed, wanted_tokens=wanted, bash_write=controls.bash_write)

    def _pace(self, controls: Controls) -> tuple[float, float]:
        """(seconds to the first token, seconds between tokens)."""
        ttft_ms = self.config.ttft_ms if controls.ttft_ms is None else controls.ttft_ms
        rate = self.config.tokens_per_s if controls.tokens_per_s is None else controls.tokens_per_s
        return ttft_ms / 1000.0, (1.0 / rate if 0 < rate < math.inf else 0.0)

    async def _message(
        self,
        send: Send,
        peer: Peer,
        request: MessagesRequest,
        usage: InputUsage,
        completion: Completion,
        controls: Controls,
        request_id: str,
        ttft_s: float,
        interval_s: float,
    ) -> None:
        if not await peer.sleep(ttft_s + completion.output_tokens * interval_s):
            return
        body = orjson.dumps(_message_json(request, usage, completion))
        if controls.fault == "midstream_disconnect":
            # Headers and half the body, then the connection drops: the client's read fails mid-body.
            self.stats.responses[200] += 1
            headers = [
                (b"content-type", _JSON),
                (b"content-length", b"%d" % len(body)),
                (b"request-id", request_id.encode()),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            raise SimulatedDrop
        await self._send_json(send, 200, body, request_id)

    async def _stream(
        self,
        send: Send,
        peer: Peer,
        request: MessagesRequest,
        usage: InputUsage,
        completion: Completion,
        controls: Controls,
        request_id: str,
        ttft_s: float,
        interval_s: float,
    ) -> None:
        plan = plan_stream(new_id("msg"), request.model, usage, completion)
        stats = self.stats
        stats.streams_started += 1
        stats.streams_open += 1
        stats.responses[200] += 1
        outcome = "cancelled"
        try:
            peer.watch()
            headers = [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"request-id", request_id.encode()),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": plan.head, "more_body": True})
            paced = plan.paced
            fault = controls.fault
            limit = len(paced)
            if fault in ("midstream_overloaded", "midstream_disconnect"):
                limit = min(limit, MIDSTREAM_FAULT_AFTER_TOKENS)
            loop = asyncio.get_running_loop()
            first_due = loop.time() + ttft_s
            sent = 0
            while sent < limit:
                now = loop.time()
                due = first_due + sent * interval_s
                if due > now:
                    wait = due - now if sent == 0 else max(due - now, MIN_WRITE_INTERVAL_S)
                    if not await peer.sleep(wait):
                        return
                    now = loop.time()
                upto = sent + 1
                while upto < limit and first_due + upto * interval_s <= now:
                    upto += 1
                chunk = paced[sent] if upto == sent + 1 else b"".join(paced[sent:upto])
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if peer.gone:
                    return
                sent = upto
            if fault == "midstream_overloaded":
                outcome = "failed"
                await send({"type": "http.response.body", "body": error_event("overloaded_error", "Overloaded")})
                return
            if fault == "midstream_disconnect":
                outcome = "failed"
                raise SimulatedDrop
            if sent == 0 and not await peer.sleep(first_due - loop.time()):
                return
            outcome = "completed"
            await send({"type": "http.response.body", "body": plan.tail})
        finally:
            stats.streams_open -= 1
            if outcome == "completed":
                stats.streams_completed += 1
            elif outcome == "failed":
                stats.streams_failed += 1
            else:
                stats.streams_cancelled += 1

    async def _count_tokens(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, ids: tuple[str, ...]
    ) -> None:
        headers = self._begin_api_request(scope)
        _, body = await self._read_json(receive, headers)
        self.stats.last_request = body
        request = parse_messages_request(body, for_count=True, betas=_betas(scope))
        await self._send_json(send, 200, orjson.dumps({"input_tokens": count_input_tokens(request)}), request_id)

    async def _root(self, scope: Scope, receive: Receive, send: Send, request_id: str, ids: tuple[str, ...]) -> None:
        # Clients probe the base URL (Claude Code sends `HEAD /`); no key is needed for that.
        await self._send_json(send, 200, b"{}", request_id)

    # -- models ------------------------------------------------------------------------------------------------

    async def _models(self, scope: Scope, receive: Receive, send: Send, request_id: str, ids: tuple[str, ...]) -> None:
        self._begin_api_request(scope)
        await self._send_json(send, 200, orjson.dumps(page(CATALOGUE, scope["query_string"])), request_id)

    async def _model(self, scope: Scope, receive: Receive, send: Send, request_id: str, ids: tuple[str, ...]) -> None:
        self._begin_api_request(scope)
        (model_id,) = ids
        if model_id not in MODELS:
            raise SimError(404, "not_found_error", f"model: {model_id}")
        await self._send_json(send, 200, orjson.dumps(model_info(model_id)), request_id)

    # -- message batches ---------------------------------------------------------------------------------------

    def _batch_result(self, params: object, betas: frozenset[str]) -> JSONObject:
        """What `/v1/messages` would have answered to `params`, as a batch result."""
        try:
            request = parse_messages_request(params, betas=betas)
            controls = parse_controls({}, request.last_user_text())
            if controls.fault in _FAULT_ERRORS:
                raise _fault_error(controls.fault or "", controls, request)
            usage = self.cache.account(request, has_cache_control=True)
            completion = self._complete(request, controls)
        except SimError as error:
            return {"type": "errored", "error": orjson.loads(error.body(new_id("req")))}
        return {"type": "succeeded", "message": _message_json(request, usage, completion)}

    async def _create_batch(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, ids: tuple[str, ...]
    ) -> None:
        headers = self._begin_api_request(scope)
        _, body = await self._read_json(receive, headers)
        betas = _betas(scope)
        batch = self.batches.create(body, lambda params: self._batch_result(params, betas))
        now = self.batches.clock()
        await self._send_json(send, 200, orjson.dumps(batch.as_json(now, _base_url(scope))), request_id)

    async def _list_batches(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, ids: tuple[str, ...]
    ) -> None:
        self._begin_api_request(scope)
        listed = page(self.batches.newest_first(_base_url(scope)), scope["query_string"])
        await self._send_json(send, 200, orjson.dumps(listed), request_id)

    async def _get_batch(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, ids: tuple[str, ...]
    ) -> None:
        self._begin_api_request(scope)
        batch = self.batches.get(ids[0])
        await self._send_json(
            send, 200, orjson.dumps(batch.as_json(self.batches.clock(), _base_url(scope))), request_id
        )

    async def _cancel_batch(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, ids: tuple[str, ...]
    ) -> None:
        self._begin_api_request(scope)
        batch = self.batches.get(ids[0])
        canceling = batch.cancel_initiated_at is None and not batch.ended(self.batches.clock())
        batch = self.batches.cancel(ids[0])
        answer = batch.as_json(self.batches.clock(), _base_url(scope), canceling=canceling)
        await self._send_json(send, 200, orjson.dumps(answer), request_id)

    async def _delete_batch(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, ids: tuple[str, ...]
    ) -> None:
        self._begin_api_request(scope)
        self.batches.delete(ids[0])
        await self._send_json(send, 200, orjson.dumps({"id": ids[0], "type": "message_batch_deleted"}), request_id)

    async def _batch_results(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, ids: tuple[str, ...]
    ) -> None:
        self._begin_api_request(scope)
        batch = self.batches.results(ids[0])
        self.stats.responses[200] += 1
        headers = [(b"content-type", _JSONL), (b"request-id", request_id.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for line in batch.result_lines():
            await send({"type": "http.response.body", "body": line, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    # -- files -------------------------------------------------------------------------------------------------

    def _begin_files_request(self, scope: Scope) -> Headers:
        headers = self._begin_api_request(scope)
        if FILES_BETA not in _betas(scope):
            raise invalid_request(
                f"The Files API is in beta: this endpoint requires the anthropic-beta header {FILES_BETA!r}"
            )
        return headers

    async def _upload_file(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, ids: tuple[str, ...]
    ) -> None:
        headers = self._begin_files_request(scope)
        boundary = boundary_of(headers.get(b"content-type", b"").decode("latin-1"))
        stored = await self.files.upload(receive, boundary)
        await self._send_json(send, 200, orjson.dumps(stored.metadata()), request_id)

    async def _list_files(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, ids: tuple[str, ...]
    ) -> None:
        self._begin_files_request(scope)
        await self._send_json(
            send, 200, orjson.dumps(page(self.files.newest_first(), scope["query_string"], cursor=True)), request_id
        )

    async def _file_metadata(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, ids: tuple[str, ...]
    ) -> None:
        self._begin_files_request(scope)
        await self._send_json(send, 200, orjson.dumps(self.files.get(ids[0]).metadata()), request_id)

    async def _delete_file(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, ids: tuple[str, ...]
    ) -> None:
        self._begin_files_request(scope)
        self.files.delete(ids[0])
        await self._send_json(send, 200, orjson.dumps({"id": ids[0], "type": "file_deleted"}), request_id)

    async def _file_content(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, ids: tuple[str, ...]
    ) -> None:
        self._begin_files_request(scope)
        stored, fd = self.files.open(ids[0])
        self.stats.responses[200] += 1
        headers = [
            (b"content-type", stored.mime_type.encode("latin-1")),
            (b"content-length", b"%d" % stored.size_bytes),
            (b"request-id", request_id.encode()),
        ]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async for chunk in read_chunks(fd):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            os.close(fd)

    # -- the simulator's own endpoints -------------------------------------------------------------------------

    async def _sim_stats(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, ids: tuple[str, ...]
    ) -> None:
        await self._send_json(send, 200, orjson.dumps(self.stats.snapshot()), request_id, counted=False)

    async def _sim_reset(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, ids: tuple[str, ...]
    ) -> None:
        self.stats.reset()
        self.cache.clear()
        await self._send_json(send, 200, orjson.dumps(self.stats.snapshot()), request_id, counted=False)


def _message_json(request: MessagesRequest, usage: InputUsage, completion: Completion) -> JSONObject:
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": completion.content(),
        "stop_reason": completion.stop_reason,
        "stop_sequence": completion.stop_sequence,
        "usage": {**usage.as_dict(), "output_tokens": completion.output_tokens, "service_tier": "standard"},
    }


def _betas(scope: Scope) -> frozenset[str]:
    return parse_betas([value for name, value in scope["headers"] if name == b"anthropic-beta"])


def _base_url(scope: Scope) -> str:
    """This simulator's URL as the client named it (its `Host`), as the API builds `results_url`."""
    host = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"host"), None)
    if host is None:
        server_host, port = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server_host}:{port}"
    return f"{scope.get('scheme', 'http')}://{host}"


def _fault_error(fault: str, controls: Controls, request: MessagesRequest) -> SimError:
    status, error_type, message = _FAULT_ERRORS[fault]
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if fault == "rate_limit":
        retry_after = DEFAULT_RETRY_AFTER_S if controls.retry_after is None else controls.retry_after
        headers = ((b"retry-after", _seconds(retry_after).encode()),)
    return SimError(status, error_type, message.format(model=request.model), headers)


def _seconds(value: float) -> str:
    """Whole seconds as Anthropic writes them, or the fraction a test asked for."""
    return str(int(value)) if value.is_integer() else repr(value)


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise SimError(400, "invalid_request_error", "The client disconnected while sending the body.")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise SimError(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(config: SimulatorConfig) -> SimulatorApp:
    """The simulator as an ASGI callable (see the package docstring for what it does)."""
    # A simulated drop surfaces in the server's log as an application error: it is intended, so it is hidden.
    logging.getLogger("uvicorn.error").addFilter(_hide_simulated_drops)
    return SimulatorApp(config)


__all__ = ["SimulatedDrop", "SimulatorApp", "create_app", "error_body"]
