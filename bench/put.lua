-- wrk script: PUTs of a fixed-size body, each to a fresh /upload/<token>/<name> path.
--   wrk -s bench/put.lua URL -- BASE BODY_BYTES
-- Tokens are printf("%040x", BASE + thread * STRIDE + n): bench/run.sh inserts exactly these
-- tokens as slots beforehand (nginx alone needs none), so every PUT is authorized against its
-- own unused slot and creates its own file.

STRIDE = 1000000

local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

local counter, base

function init(args)
  id = id or 0
  counter = 0
  base = tonumber(args[1] or "0") + id * STRIDE
  wrk.method = "PUT"
  wrk.body = string.rep("x", tonumber(args[2] or "4096"))
  wrk.headers["Content-Type"] = "application/octet-stream"
end

function request()
  counter = counter + 1
  return wrk.format(nil, string.format("/upload/%040x/file.bin", base + counter))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT rps=%.1f p50_us=%d p99_us=%d non2xx=%d sockerr=%d requests=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout, summary.requests))
end
