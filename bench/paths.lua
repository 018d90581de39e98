-- wrk script: spread requests over a list of paths, one per line in a file.
--
--   wrk -t2 -c64 -d10s -s bench/paths.lua http://127.0.0.1:8080 -- PATHS_FILE [rr|random]
--
-- rr (default): every thread walks the whole list in order, each starting at its
-- own offset, so all paths are requested evenly. random: uniform picks, seeded
-- per thread (reproducible). Requests are pre-formatted once per thread, so the
-- script costs wrk next to nothing per request. done() prints one line
-- "BENCH_JSON {...}" with the counts, errors and latency percentiles (microseconds)
-- that bench/wrk.py parses; wrk's own --latency text is printed too.

local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

function init(args)
  local file = args[1] or error("paths.lua: pass the paths file after --")
  mode = args[2] or "rr"
  reqs = {}
  for line in io.lines(file) do
    if #line > 0 then reqs[#reqs + 1] = wrk.format("GET", line) end
  end
  n = #reqs
  if n == 0 then error("paths.lua: no paths in " .. file) end
  local t = tid or 0
  math.randomseed(1000 + t)
  -- threads start spread evenly over the list
  pos = (t * math.floor(n / 8 + 1) * 3) % n
end

function request()
  if mode == "random" then
    return reqs[math.random(n)]
  end
  pos = pos % n + 1
  return reqs[pos]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p75":%d,"p90":%d,' ..
    '"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
