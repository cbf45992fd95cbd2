"""Each worker freezes the objects it loaded at start-up out of the garbage collector's full collections, and
collects young objects less often than CPython's default."""

from __future__ import annotations

import subprocess
import sys

# What a worker runs: the app built, then Gunicorn's post_worker_init hook as `serve` configures it. In a child
# process, since freezing is for the life of the process.
WORKER = """
import gc
import time
from claude_gateway.web.app import create_app
from claude_gateway.server.gc_tuning import GC_YOUNG_THRESHOLD
from claude_gateway.server.gunicorn import gunicorn_options
from claude_gateway.settings import load_settings

settings = load_settings()
create_app(settings).openapi()
gunicorn_options(settings, "127.0.0.1", 0, 1)["post_worker_init"](None)
started = time.perf_counter()
gc.collect()
print(gc.get_freeze_count(), (time.perf_counter() - started) * 1000, gc.get_threshold()[0] == GC_YOUNG_THRESHOLD)
"""


def test_the_worker_freezes_what_it_loaded() -> None:
    done = subprocess.run([sys.executable, "-c", WORKER], capture_output=True, text=True, check=True, timeout=60)
    frozen, full_collection_ms, tuned = done.stdout.split()
    print(f"frozen objects: {frozen}; a full collection after: {float(full_collection_ms):.1f} ms")
    assert int(frozen) > 100_000  # FastAPI, pydantic and the SDK's types: about 200,000 here
    assert tuned == "True"
