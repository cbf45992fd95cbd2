"""The tunables of background jobs, with their units and the reason for each value."""

from __future__ import annotations

# Every Redis key the gateway's job code writes itself starts with this (ARQ's own keys keep ARQ's `arq:` prefixes,
# which ARQ does not let us change).
JOB_KEY_PREFIX = "claude-gateway:job:"
# ARQ's queue (a sorted set of job ids): our own name, so that another ARQ application on the same Redis does not
# pick up our jobs nor we theirs.
QUEUE_NAME = "claude-gateway:queue"
# The ARQ function name a job is enqueued under; the worker registers `analyze_document` under this name.
JOB_FUNCTION = "analyze_document"

# A chunk of a long document, in characters. Claude's context window is 200k tokens; English runs at about
# 4 characters a token and dense scripts (Chinese, Japanese) at about 1.5 tokens a character, so 100k characters
# stay inside the window for any text with room for the prompt and the summary. Smaller chunks would cost more
# calls (and a longer combine step) for no better summary.
CHUNK_CHARS = 100_000
# A chunk is cut at the last paragraph, line or word break within its final 10%, so that no chunk is shorter
# than 90% of CHUNK_CHARS (which keeps the number of calls predictable for the job timeout below).
CHUNK_BOUNDARY_FRACTION = 0.1
# Output tokens for one summary (of the document, of a chunk, or of the chunk summaries). About 750 words: a
# summary of a 100k-character chunk, and at most ~5k characters, so that the chunk summaries of the largest
# document fit in one combine call.
SUMMARY_MAX_TOKENS = 1024
# The longest a summary can be, in characters, for planning: ~6 characters a token is generous for prose.
SUMMARY_MAX_CHARS = SUMMARY_MAX_TOKENS * 6
# Chunk summaries requested at once by one job: enough to cut a 1M-character document's wall time by 4x,
# few enough that one job does not take a whole upstream rate limit for itself.
CHUNK_CONCURRENCY = 4
# Summaries of summaries, at most: each level shrinks the text ~20x (100k characters in, <= ~5k out), so 4 levels
# cover documents far past any MAX_DOCUMENT_CHARS; the cap only guards against a model that does not shrink.
MAX_SUMMARY_LEVELS = 4

# A job is run again after an upstream failure the client's retry policy would retry, waiting what that policy says
# (`upstream_client.RetryPolicy`: Anthropic's `retry-after`, else 0.5 s doubling to 8 s with jitter), so that jobs
# and requests back off alike. Anthropic's `retry-after` is obeyed, but never beyond this: a bogus header must not
# park a job for hours.
RETRY_AFTER_CAP_S = 300.0

# A job that no worker starts within a day is dropped by ARQ (and reported failed: expired). ARQ's own default.
JOB_EXPIRES_S = 24 * 3600
# Chunk summaries already made are kept this long, so that a job retried after a transient error, or re-run after a
# worker died, resumes where it stopped instead of paying for those calls again. As long as a job can wait.
PARTS_TTL_S = JOB_EXPIRES_S

# Jobs one worker process runs at once (ARQ's default): each spends its time waiting on Anthropic, so ten share a
# process easily; more processes (pods) scale further.
WORKER_MAX_JOBS = 10
# ARQ's own health record (a Redis key per worker host, for `redis-cli get` and `arq --check`) is refreshed this
# often. Nothing restarts a worker on it: liveness is the local heartbeat file below.
HEALTH_CHECK_INTERVAL_S = 10
# How often a worker samples the queue depth for `claude_gateway_jobs_queued` (one ZCARD): a typical scrape interval.
QUEUE_DEPTH_SAMPLE_S = 15.0

# The worker's event loop touches WORKER_HEARTBEAT_FILE this often: a few seconds, so that the file says within
# seconds whether the loop still turns, at the cost of one metadata write each time.
HEARTBEAT_INTERVAL_S = 5.0
# `claude-gateway worker --check` passes while the file is at most this old: three intervals (two beats may be late,
# on a loaded node or behind a long garbage collection, without a restart) plus 2 s for the probe's own scheduling.
# With the chart's liveness probe (every 30 s, 3 failures) a wedged or dead worker is restarted within ~2 minutes.
HEARTBEAT_STALE_S = 3 * HEARTBEAT_INTERVAL_S + 2.0
# A worker whose Redis does not answer (its poll of the queue failed) tries again after this long, with its running
# jobs going on meanwhile: a Redis restart or failover takes seconds, and each try is one round trip.
REDIS_RETRY_S = 2.0

# ARQ marks a running job in progress for job_timeout + 10 s (minutes): after a SIGKILL nothing else could run it
# before that. The worker running a job holds the mark as a lease instead (`in_progress`): this long ...
IN_PROGRESS_LEASE_S = 15.0
# ... renewed this often while the job runs. Three renewals fit in a lease, so two may fail (a Redis blip, a loaded
# node) before the mark lapses under a live job; a dead worker's job is free at most IN_PROGRESS_LEASE_S after its
# last renewal, and another worker (polling every 0.5 s) starts it: well within the 30 s the gateway promises.
IN_PROGRESS_RENEW_S = 5.0
# One renewal round waits this long for Redis before giving up on that round (the next comes IN_PROGRESS_RENEW_S later).
IN_PROGRESS_RENEW_TIMEOUT_S = 2.0

# DELETE waits this long for a worker to act on an abort, so that the usual answer already reflects it; a worker
# polls every 0.5 s (ARQ's poll_delay), so two polls. If no worker acts in time, the abort stays pending and a worker
# applies it when it next looks at the job.
CANCEL_WAIT_S = 1.0
CANCEL_POLL_S = 0.1

# `Retry-After` when Redis does not answer a job request: a Redis restart or failover takes seconds, not minutes.
JOBS_UNAVAILABLE_RETRY_AFTER_S = 5

# In-process jobs (no REDIS_URL) run at most this many at once in the API process, like one ARQ worker.
IN_PROCESS_MAX_JOBS = WORKER_MAX_JOBS
# Finished in-process results are swept for expiry at most this often (a sweep walks every task).
IN_PROCESS_SWEEP_INTERVAL_S = 60.0
