"""The reference: the seed article's design exactly as it is written (../shared/seed/), in one module.

What `make bench` compares the gateway against. Kept faithful on purpose, shortcomings included: a global
`AsyncAnthropic` made in the lifespan, the `ChatRequest` / `ChatResponse` models, `verify_api_key` re-reading
`VALID_API_KEYS` on every request, `/chat` parsing the SDK's `Message` and `/chat/stream` going through the SDK's
`MessageStream`. No limits and no metrics (the article's slowapi limiter keys on the IP, and the benchmark's clients
all share one). Only the article's `main.py`, `auth.py` and `models.py` are merged into this file; nothing is
optimised. The SDK reads `ANTHROPIC_API_KEY` and `ANTHROPIC_BASE_URL` from the environment, as in the article.

Served by `uvicorn bench.reference_app:app --workers N` or by Gunicorn with uvicorn workers (see `bench.servers`).
"""
# The article's idioms are kept as written (a global client, untyped handlers, `set(...)` of a generator): the
# few `noqa` / `type: ignore` comments below are for them, not for changes.

import json
import os
from contextlib import asynccontextmanager

import anthropic
from fastapi import Depends, FastAPI, HTTPException, Security
from fastapi.responses import StreamingResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field

# -- models.py


class ChatRequest(BaseModel):
    message: str = Field(..., min_length=1, max_length=10000)
    system_prompt: str = Field(default="You are a helpful assistant.")
    model: str = Field(default="claude-sonnet-4-6")
    max_tokens: int = Field(default=1024, ge=1, le=8096)


class ChatResponse(BaseModel):
    text: str
    input_tokens: int
    output_tokens: int


# -- auth.py

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=True)


async def verify_api_key(api_key: str = Security(api_key_header)) -> str:
    valid_keys = set(k.strip() for k in os.environ.get("VALID_API_KEYS", "").split(",") if k.strip())  # noqa: C401
    if not valid_keys or api_key not in valid_keys:
        raise HTTPException(status_code=403, detail="Invalid or missing API key")
    return api_key


# -- main.py

claude_client: anthropic.AsyncAnthropic = None  # type: ignore[assignment]


@asynccontextmanager
async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
    global claude_client
    claude_client = anthropic.AsyncAnthropic()
    yield
    await claude_client.close()


app = FastAPI(title="Claude API Backend", lifespan=lifespan)


@app.post("/chat", response_model=ChatResponse)
async def chat(request: ChatRequest, api_key: str = Depends(verify_api_key)):  # type: ignore[no-untyped-def]
    response = await claude_client.messages.create(
        model=request.model,
        max_tokens=request.max_tokens,
        system=request.system_prompt,
        messages=[{"role": "user", "content": request.message}],
    )
    text_block = next((b for b in response.content if b.type == "text"), None)
    if not text_block:
        raise HTTPException(status_code=502, detail="No text in response")
    return ChatResponse(
        text=text_block.text,
        input_tokens=response.usage.input_tokens,
        output_tokens=response.usage.output_tokens,
    )


@app.post("/chat/stream")
async def chat_stream(request: ChatRequest, api_key: str = Depends(verify_api_key)):  # type: ignore[no-untyped-def]
    async def generate():  # type: ignore[no-untyped-def]
        async with claude_client.messages.stream(
            model=request.model,
            max_tokens=request.max_tokens,
            system=request.system_prompt,
            messages=[{"role": "user", "content": request.message}],
        ) as stream:
            async for text in stream.text_stream:
                yield f"data: {json.dumps({'text': text})}\n\n"
            final = await stream.get_final_message()
            yield f"data: {json.dumps({'done': True, 'usage': {'input': final.usage.input_tokens, 'output': final.usage.output_tokens}})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        generate(),  # type: ignore[no-untyped-call]
        media_type="text/event-stream",
        headers={
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # Disable nginx buffering
        },
    )
