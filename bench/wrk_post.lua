-- wrk script of `make bench`: POST one fixed body with fixed headers, print a JSON summary at the end.
-- Usage: wrk ... -s bench/wrk_post.lua URL -- BODY_FILE "Name: value" ...
-- The request is built once per thread (building it per request would cost wrk more than some servers do).

local request_bytes

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local body = file:read("*a")
  file:close()
  local headers = {}
  for i = 2, #args do
    local name, value = args[i]:match("^([^:]+):%s*(.*)$")
    headers[name] = value
  end
  request_bytes = wrk.format("POST", nil, headers, body)
end

function request()
  return request_bytes
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
