"""Message Batches and Files through the gateway with the official TypeScript SDK (`@anthropic-ai/sdk` on node): the
same script run through the gateway and straight at the simulator gives the same answers (but for ids, timestamps
and results_url's origin), and a second key gets 404 for the first key's batch and file."""

from __future__ import annotations

from typing import Any

from tests.conftest import CLIENT_KEY, OTHER_KEY, Gateway
from tests.support.npm_tools import NpmTools, npm_tools  # noqa: F401 (the fixture)
from tests.support.servers import Process

MODEL = "claude-sonnet-4-6"


def run(npm_tools: NpmTools, base_url: str, api_key: str, body: str, **values: str) -> Any:  # noqa: F811
    constants = "".join(f"const {name} = {value!r};\n" for name, value in values.items())
    script = f"""
import Anthropic from "@anthropic-ai/sdk";
const client = new Anthropic({{ maxRetries: 0 }});
const model = {MODEL!r};
{constants}
const out = await (async () => {{ {body} }})();
console.log(JSON.stringify(out));
"""
    return npm_tools.node(script, base_url=base_url, api_key=api_key)


BATCHES = """
const params = (text, max_tokens) => ({ model, max_tokens, messages: [{ role: "user", content: text }] });
const created = await client.messages.batches.create({
  requests: [{ custom_id: "one", params: params("Hi", 8) }, { custom_id: "two", params: params("Hello there", 5) }],
});
let batch = created;
const deadline = Date.now() + 30000;
while (batch.processing_status !== "ended" && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 50));
  batch = await client.messages.batches.retrieve(created.id);
}
const results = [];
for await (const line of await client.messages.batches.results(created.id)) results.push(line);
const listed = [];
for await (const b of client.messages.batches.list({ limit: 1000 })) listed.push(b.id);
const deleted = await client.messages.batches.delete(created.id);
return { created, batch, results, listed: listed.includes(created.id), deleted };
"""

FILES = """
const betas = ["files-api-2025-04-14"];
const bytes = new Uint8Array(1024 * 1024).map((_, i) => i % 251);
const file = await Anthropic.toFile(bytes, "data.bin", { type: "application/octet-stream" });
const uploaded = await client.beta.files.upload({ file, betas });
const metadata = await client.beta.files.retrieveMetadata(uploaded.id, { betas });
const download = await client.beta.files.download(uploaded.id, { betas });
const downloaded = new Uint8Array(await download.arrayBuffer());
const same = downloaded.length === bytes.length && downloaded.every((b, i) => b === bytes[i]);
const listed = [];
for await (const f of client.beta.files.list({ betas })) listed.push(f.id);
const deleted = await client.beta.files.delete(uploaded.id, { betas });
return { uploaded, metadata, same, contentType: download.headers.get("content-type"), listed: listed.includes(uploaded.id), deleted };
"""


def without(data: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: value for name, value in data.items() if name not in names}


BATCH_FIELDS = ("id", "created_at", "expires_at", "ended_at", "cancel_initiated_at", "results_url")


def test_batches_match_the_simulator(npm_tools: NpmTools, gateway: Gateway, simulator: Process) -> None:  # noqa: F811
    through = run(npm_tools, gateway.url, CLIENT_KEY, BATCHES)
    straight = run(npm_tools, simulator.url, "sk-ant-direct", BATCHES)

    for step in ("created", "batch"):
        assert without(through[step], *BATCH_FIELDS) == without(straight[step], *BATCH_FIELDS)
    assert through["batch"]["results_url"] == f"{gateway.url}/v1/messages/batches/{through['created']['id']}/results"
    for line in through["results"] + straight["results"]:
        line["result"]["message"].pop("id")
    assert through["results"] == straight["results"]
    assert [line["result"]["message"]["usage"]["output_tokens"] for line in through["results"]] == [8, 5]
    assert through["listed"] is True
    assert through["deleted"] == {"id": through["created"]["id"], "type": "message_batch_deleted"}


def test_files_match_the_simulator(npm_tools: NpmTools, gateway: Gateway, simulator: Process) -> None:  # noqa: F811
    through = run(npm_tools, gateway.url, CLIENT_KEY, FILES)
    straight = run(npm_tools, simulator.url, "sk-ant-direct", FILES)

    for step in ("uploaded", "metadata"):
        assert without(through[step], "id", "created_at") == without(straight[step], "id", "created_at")
    assert through["uploaded"] == through["metadata"]
    assert through["same"] is True
    assert through["contentType"] == straight["contentType"] == "application/octet-stream"
    assert through["listed"] is True
    assert through["deleted"] == {"id": through["uploaded"]["id"], "type": "file_deleted"}


def test_another_key_gets_404(npm_tools: NpmTools, gateway: Gateway) -> None:  # noqa: F811
    made = run(
        npm_tools,
        gateway.url,
        CLIENT_KEY,
        """
        const batch = await client.messages.batches.create({
          requests: [{ custom_id: "one", params: { model, max_tokens: 4, messages: [{ role: "user", content: "Hi" }] } }],
        });
        const file = await client.beta.files.upload({
          file: await Anthropic.toFile(new Uint8Array([1, 2, 3]), "x.bin"), betas: ["files-api-2025-04-14"],
        });
        return { batch: batch.id, file: file.id };
        """,
    )
    seen = run(
        npm_tools,
        gateway.url,
        OTHER_KEY,
        """
        const betas = ["files-api-2025-04-14"];
        const status = async (call) => { try { await call(); return 200; } catch (e) { return [e.status, e.error.error]; } };
        const batches = [];
        for await (const b of client.messages.batches.list()) batches.push(b.id);
        const files = [];
        for await (const f of client.beta.files.list({ betas })) files.push(f.id);
        return {
          batch: await status(() => client.messages.batches.retrieve(batchId)),
          file: await status(() => client.beta.files.retrieveMetadata(fileId, { betas })),
          listed: batches.includes(batchId) || files.includes(fileId),
        };
        """,
        batchId=made["batch"],
        fileId=made["file"],
    )
    assert seen["batch"] == [404, {"type": "not_found_error", "message": f"Message batch not found: {made['batch']}"}]
    assert seen["file"] == [404, {"type": "not_found_error", "message": f"File not found: {made['file']}"}]
    assert seen["listed"] is False
