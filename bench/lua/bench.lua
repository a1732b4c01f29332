-- wrk script for bench/run.sh. Everything is optional and driven by the
-- environment, so one script serves every run:
--   BENCH_KEYS_FILE  a file of API keys, one a line: each request carries the
--                    next key (threads start at different offsets), so with N
--                    keys spread over N tenants every tenant is active.
--   BENCH_DELAY_MS   wait this long before each request on a connection: a
--                    bounded, unsaturated load (wrk otherwise sends as fast as
--                    answers come back).
--   BENCH_SLOW_EVERY, BENCH_SLOW_MS
--                    the slow-response mix: every Nth request of a thread
--                    goes to the URL's path with slow_ms=MS added to its
--                    query, which bench/backend answers after MS ms (the
--                    others are unchanged).
-- Without BENCH_KEYS_FILE and BENCH_SLOW_* no request() is defined, so wrk
-- sends its one prebuilt request with no Lua call per request.
-- done() prints one machine-readable WRKRESULT line (latencies in µs).

local keys_file = os.getenv("BENCH_KEYS_FILE")
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
local slow_every = tonumber(os.getenv("BENCH_SLOW_EVERY") or "") or 0
local slow_ms = tonumber(os.getenv("BENCH_SLOW_MS") or "") or 0
local slow = slow_every > 0 and slow_ms > 0

local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local keys = {}
if keys_file and keys_file ~= "" then
  for line in io.lines(keys_file) do
    if #line > 0 then keys[#keys + 1] = line end
  end
  if #keys == 0 then error("no keys in " .. keys_file) end
end

if #keys > 0 or slow then
  local n = #keys
  local i = 0            -- index of the last key sent
  local k = 0            -- requests sent by this thread
  local headers = {}
  local slow_path        -- wrk.path with slow_ms added
  local fast_req, slow_req -- prebuilt requests when there are no keys

  function init(args)
    for name, v in pairs(wrk.headers) do headers[name] = v end
    local nthreads = tonumber(os.getenv("BENCH_WRK_THREADS") or "") or 1
    if n > 0 then
      -- spread the threads' starting points over the key list
      i = math.floor((tid or 0) * n / nthreads) % n
    end
    if slow then
      local sep = string.find(wrk.path, "?", 1, true) and "&" or "?"
      slow_path = wrk.path .. sep .. "slow_ms=" .. string.format("%d", slow_ms)
      -- threads start at different points of the N-request cycle
      k = math.floor((tid or 0) * slow_every / nthreads)
    end
    if n == 0 then
      fast_req = wrk.format(nil, nil, headers)
      if slow then slow_req = wrk.format(nil, slow_path, headers) end
    end
  end

  function request()
    local is_slow = false
    if slow then
      k = k + 1
      is_slow = k % slow_every == 0
    end
    if n == 0 then
      if is_slow then return slow_req end
      return fast_req
    end
    i = i % n + 1
    headers["X-API-Key"] = keys[i]
    if is_slow then return wrk.format(nil, slow_path, headers) end
    return wrk.format(nil, nil, headers)
  end
end

if delay_ms and delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

-- wrk (4.x) corrects its latency histogram for coordinated omission before
-- done() sees it (stats_correct in wrk.c): every latency n of at least twice
-- the mean interval between requests on a connection, e = duration /
-- (requests / connections), adds samples at n-e, n-2e, ... down to e. Those
-- are the latencies wrk prints. With BENCH_RAW_LATENCY=1 (and
-- BENCH_WRK_CONNS, the -c value) done() also undoes the correction, giving
-- each request's own latency once: for m > e, corrected[m] = raw[m] +
-- sum over k >= 1 of raw[m + k*e] = raw[m] + corrected[m + e]. The result
-- is checked (its sample count must equal the requests wrk completed); raw
-- percentiles are left out when it does not match or the histogram is too
-- wide to read back in reasonable time (wrk's stats(i) scans from the min).
local function raw_percentiles(summary, latency, ps)
  local conns = tonumber(os.getenv("BENCH_WRK_CONNS") or "") or 0
  local n = #latency
  if conns <= 0 or n == 0 or n * (latency.max - latency.min) > 4e9 then return nil end
  local vals, cnt = {}, {}
  for i = 1, n do
    local v, c = latency(i)
    vals[i] = v
    cnt[v] = c
  end
  local per = math.floor(summary.requests / conns)
  local e = per > 0 and math.floor(summary.duration / per) or nil
  local raw, total = {}, 0
  for i = 1, n do
    local v = vals[i]
    local r = cnt[v]
    if e and v > e then r = r - (cnt[v + e] or 0) end
    if r < 0 then return nil end
    raw[i] = r
    total = total + r
  end
  if total ~= summary.requests then return nil end
  local out = {}
  for j, p in ipairs(ps) do
    -- wrk's rule: rank = round(p/100 * count + 0.5)
    local rank = math.floor(p / 100 * total + 1)
    local acc = 0
    for i = 1, n do
      acc = acc + raw[i]
      if acc >= rank then out[j] = vals[i]; break end
    end
    out[j] = out[j] or vals[n]
  end
  return out
end

function done(summary, latency, requests)
  local e = summary.errors
  local raw = ""
  if os.getenv("BENCH_RAW_LATENCY") == "1" then
    local r = raw_percentiles(summary, latency, {50, 90, 99, 99.9})
    if r then
      raw = string.format(" raw_p50_us=%d raw_p90_us=%d raw_p99_us=%d raw_p999_us=%d", r[1], r[2], r[3], r[4])
    else
      raw = " raw=unavailable"
    end
  end
  io.write(string.format(
    "WRKRESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d non2xx=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d%s\n",
    summary.requests, summary.duration, summary.requests / summary.duration * 1e6,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout, raw))
end
