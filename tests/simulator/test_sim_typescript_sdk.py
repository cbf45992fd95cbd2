"""The official TypeScript SDK (`@anthropic-ai/sdk`, on node) against the simulator: the main endpoints."""

from __future__ import annotations

from typing import Any

import pytest

from claude_gateway.simulator import BackgroundSimulator
from tests.support.npm_tools import NpmTools

from .helpers import MODEL, MakeSimulator


def run(npm_tools: NpmTools, simulator: BackgroundSimulator, body: str) -> Any:
    script = f"""
import Anthropic from "@anthropic-ai/sdk";
const client = new Anthropic({{ maxRetries: 0 }});
const model = {MODEL!r};
const out = await (async () => {{ {body} }})();
console.log(JSON.stringify(out));
"""
    return npm_tools.node(script, base_url=simulator.base_url)


def test_messages_create_and_stream(npm_tools: NpmTools, simulator: BackgroundSimulator) -> None:
    out = run(
        npm_tools,
        simulator,
        """
        const messages = [{ role: "user", content: "Hello" }];
        const created = await client.messages.create({ model, max_tokens: 16, messages });
        const stream = client.messages.stream({ model, max_tokens: 16, messages });
        const streamed = await stream.finalMessage();
        return { created, streamed };
        """,
    )

    assert out["created"]["content"] == out["streamed"]["content"]
    assert out["created"]["usage"]["output_tokens"] == 16


def test_count_tokens_and_models(npm_tools: NpmTools, simulator: BackgroundSimulator) -> None:
    out = run(
        npm_tools,
        simulator,
        """
        const messages = [{ role: "user", content: "Hello there" }];
        const counted = await client.messages.countTokens({ model, messages });
        const created = await client.messages.create({ model, max_tokens: 4, messages });
        const ids = [];
        for await (const m of client.models.list({ limit: 1 })) ids.push(m.id);
        const one = await client.models.retrieve(model);
        let missing = null;
        try { await client.models.retrieve("claude-nonexistent"); } catch (e) { missing = [e.status, e.error]; }
        return { counted, usage: created.usage, ids, one, missing };
        """,
    )

    assert out["counted"] == {"input_tokens": out["usage"]["input_tokens"]}
    assert MODEL in out["ids"]
    assert len(out["ids"]) == 3
    assert out["one"]["id"] == MODEL
    assert out["missing"][0] == 404
    assert out["missing"][1]["error"] == {"type": "not_found_error", "message": "model: claude-nonexistent"}


def test_batches(npm_tools: NpmTools, make_simulator: MakeSimulator) -> None:
    simulator = make_simulator(batch_delay_s=0.2)
    out = run(
        npm_tools,
        simulator,
        """
        const params = { model, max_tokens: 8, messages: [{ role: "user", content: "Hi" }] };
        const created = await client.messages.batches.create({ requests: [{ custom_id: "one", params }] });
        let batch = created;
        const deadline = Date.now() + 10000;
        while (batch.processing_status !== "ended" && Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 20));
          batch = await client.messages.batches.retrieve(created.id);
        }
        const results = [];
        for await (const line of await client.messages.batches.results(created.id)) results.push(line);
        const deleted = await client.messages.batches.delete(created.id);
        return { batch, results, deleted };
        """,
    )

    assert out["batch"]["processing_status"] == "ended"
    assert out["batch"]["request_counts"]["succeeded"] == 1
    assert [line["custom_id"] for line in out["results"]] == ["one"]
    assert out["results"][0]["result"]["message"]["usage"]["output_tokens"] == 8
    assert out["deleted"]["type"] == "message_batch_deleted"


@pytest.mark.parametrize("size", [5, 3 * 1024 * 1024])
def test_files(npm_tools: NpmTools, simulator: BackgroundSimulator, size: int) -> None:
    out = run(
        npm_tools,
        simulator,
        f"""
        const betas = ["files-api-2025-04-14"];
        const bytes = new Uint8Array({size}).map((_, i) => i % 251);
        const file = await Anthropic.toFile(bytes, "data.bin", {{ type: "application/octet-stream" }});
        const uploaded = await client.beta.files.upload({{ file, betas }});
        const metadata = await client.beta.files.retrieveMetadata(uploaded.id, {{ betas }});
        const downloaded = new Uint8Array(await (await client.beta.files.download(uploaded.id, {{ betas }})).arrayBuffer());
        const same = downloaded.length === bytes.length && downloaded.every((b, i) => b === bytes[i]);
        const listed = [];
        for await (const f of client.beta.files.list({{ betas }})) listed.push(f.id);
        const deleted = await client.beta.files.delete(uploaded.id, {{ betas }});
        return {{ uploaded, metadata, same, listed, deleted }};
        """,
    )

    assert out["uploaded"] == out["metadata"]
    assert out["uploaded"]["size_bytes"] == size
    assert out["same"] is True
    assert out["uploaded"]["id"] in out["listed"]
    assert out["deleted"] == {"id": out["uploaded"]["id"], "type": "file_deleted"}
