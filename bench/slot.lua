-- wrk script: one slot request per call, each with its own file name, so every request makes
-- the server create and store a real slot.
--   wrk -s bench/slot.lua URL -- JID_MODE [PREFIX]
-- JID_MODE: a fixed bare JID ("admin@example.com"), or "random:N" for user<k>@example.org with
-- k drawn from 0..N-1 (spreads slots over many JIDs, as quota checks see them in real life).
-- PREFIX: the slot API path (default /http_upload/slot/).

local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

local counter, jid_fixed, jid_random, prefix

function init(args)
  id = id or 0
  counter = 0
  local mode = args[1] or "admin@example.com"
  local n = mode:match("^random:(%d+)$")
  if n then
    jid_random = tonumber(n)
    math.randomseed(os.time() + id * 7919)
  else
    jid_fixed = mode:gsub("@", "%%40")
  end
  prefix = args[2] or "/http_upload/slot/"
end

function request()
  counter = counter + 1
  local jid = jid_fixed
  if jid_random then
    jid = "user" .. math.random(0, jid_random - 1) .. "%40example.org"
  end
  local path = string.format(
    "%s?jid=%s&name=photo-%d-%d.jpg&size=%d&content_type=image%%2Fjpeg",
    prefix, jid, id, counter, 100000 + counter % 1000)
  return wrk.format("GET", path)
end

-- One machine-readable line: requests/s, p50 and p99 in microseconds, non-2xx/3xx answers,
-- socket errors, requests.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT rps=%.1f p50_us=%d p99_us=%d non2xx=%d sockerr=%d requests=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout, summary.requests))
end
