-- wrk script for bench/run.sh. Everything is optional and driven by the
-- environment, so one script serves every run:
--   BENCH_KEYS_FILE  a file of API keys, one a line: each request carries the
--                    next key (threads start at different offsets), so with N
--                    keys spread over N tenants every tenant is active.
--   BENCH_DELAY_MS   wait this long before each request on a connection: a
--                    bounded, unsaturated load (wrk otherwise sends as fast as
--                    answers come back).
-- done() prints one machine-readable WRKRESULT line (latencies in µs).

local keys_file = os.getenv("BENCH_KEYS_FILE")
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")

local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

if keys_file and keys_file ~= "" then
  local keys = {}
  for line in io.lines(keys_file) do
    if #line > 0 then keys[#keys + 1] = line end
  end
  local n = #keys
  if n == 0 then error("no keys in " .. keys_file) end
  local i = 0
  local headers = {}

  function init(args)
    for k, v in pairs(wrk.headers) do headers[k] = v end
    -- spread the threads' starting points over the key list
    local nthreads = tonumber(os.getenv("BENCH_WRK_THREADS") or "") or 1
    i = math.floor((tid or 0) * n / nthreads) % n
  end

  function request()
    i = i % n + 1
    headers["X-API-Key"] = keys[i]
    return wrk.format(nil, nil, headers)
  end
end

if delay_ms and delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKRESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d non2xx=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.requests / summary.duration * 1e6,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
