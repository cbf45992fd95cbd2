"""A simulator of Anthropic's Messages API, faithful to its wire format, for tests, benchmarks and `make run`.

Endpoints (the query string is ignored for matching: Claude Code calls `/v1/messages?beta=true`)
    HEAD, GET /                     200, no key needed (clients probe the base URL)
    POST /v1/messages               JSON or, with `"stream": true`, server-sent events; `request-id` on every answer
    POST /v1/messages/count_tokens  `{"input_tokens": N}`: the same count as the usage `/v1/messages` reports
    GET  /v1/models[/{id}]          a small catalogue, paged (`limit`, `before_id`, `after_id`)
    POST|GET /v1/messages/batches, GET|DELETE .../{id}, POST .../{id}/cancel, GET .../{id}/results
                                    Message Batches (see `batches`): `ended` after `SimulatorConfig.batch_delay_s`
                                    (`--batch-delay-s`, env `SIM_BATCH_DELAY_S`); results as `application/x-jsonl`;
                                    `results_url` built from the request's Host
    POST|GET /v1/files, GET|DELETE /v1/files/{id}, GET /v1/files/{id}/content
                                    Files API (see `files`), only with `anthropic-beta: files-api-2025-04-14`;
                                    uploads (multipart, `file` part) streamed to disk, downloads streamed from it
    GET  /_sim/stats                `{"requests", "streams_open", "streams_started", "streams_completed",
                                    "streams_cancelled", "streams_failed", "responses", "last_headers",
                                    "last_request", "last_path"}` (`last_headers` leaves out `x-api-key` and
                                    `authorization`; `last_path` is e.g. "POST /v1/messages?beta=true")
    POST /_sim/reset                zeroes the counters and forgets cached prompts (`streams_open` is live: kept)
Any other path is a 404 and a known path with the wrong method a 405, in Anthropic's error shape.

Requests need a key (`x-api-key` or `Authorization: Bearer`; 401 without, or when `SimulatorConfig.api_key` is
set and differs) and an `anthropic-version: YYYY-MM-DD` header (400 without). Bodies are checked like Anthropic
checks them: 400 `invalid_request_error` naming the field. `max_tokens` is bounded by the catalogue model's maximum
(128000 for claude-opus-4-6; other names unbounded). The betas named in `anthropic-beta` widen what is accepted, as
for Claude Code: `mid-conversation-system-2026-04-07` allows `system` role messages after the first message,
`context-management-2025-06-27` allows `context_management`; without them the API's refusal and wording
(`messages.1.role: Input should be 'user' or 'assistant'`, `context_management: Extra inputs are not permitted`).
Unknown fields (`thinking` adaptive, `output_config`, `metadata`), tool types and `cache_control` TTLs pass.

Controls, per request, as a header or as a directive anywhere in the last user message's text
(`[[sim:fault=overloaded]]`, several in one: `[[sim:tokens=50 ttft_ms=0]]`); a header wins over a directive:
    x-sim-fault         fault=          one of the faults below
    x-sim-tokens        tokens=         output tokens (capped by `max_tokens`: then `stop_reason` is `max_tokens`)
    x-sim-ttft-ms       ttft_ms=        time to the first token
    x-sim-tokens-per-s  tokens_per_s=   generation speed (0: no pacing)
    x-sim-retry-after   retry_after=    seconds in a 429's `retry-after` (default 1)
    x-sim-bash-write    bash_write=     a path: answer with a `tool_use` of the request's `Bash` tool (Claude Code's)
                                        whose command writes that file; the request carrying its `tool_result`
                                        gets a text answer (`[[sim:bash_write=/tmp/x/out.txt]]`; no spaces)
Faults:
    rate_limit 429 rate_limit_error + retry-after | overloaded 529 overloaded_error | server_error 500 api_error
    auth 401 authentication_error | permission 403 permission_error | not_found 404 not_found_error
    bad_request 400 invalid_request_error
    midstream_overloaded   a 200 stream that, after 3 output tokens, sends `event: error` (overloaded_error) and
                           ends; a non-streaming request gets the 529 instead
    midstream_disconnect   the connection drops after 3 output tokens with no clean end (non-streaming: halfway
                           through the JSON body)
    hang                   waits an hour (or until the client leaves) before answering
    empty                  a message with no content blocks (`content: []`)

The answer (see `generation`): deterministic words for (seed, request), one output token each, paced by the
time to first token and tokens per second; a tool call when the request has `tools` and forces one or names one
in its last user message; prompt caching per `cache_control` breakpoint (see `tokens`). Streams count as
cancelled when the client leaves before `message_stop`; that is noticed at once, not at the next write.
"""

from claude_gateway.simulator.app import SimulatorApp, create_app
from claude_gateway.simulator.config import SimulatorConfig
from claude_gateway.simulator.server import BackgroundSimulator, serve

__all__ = ["BackgroundSimulator", "SimulatorApp", "SimulatorConfig", "create_app", "serve"]
