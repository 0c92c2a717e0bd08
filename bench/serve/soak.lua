-- wrk script for bench/soak.sh: one connection per thread (so each response answers the
-- thread's last request), a mix of V2 JSON and V2 binary requests with one malformed body
-- in every 20, paced by DELAY_MS (fractional) between a connection's requests. Good requests must get 200, malformed
-- ones a 4xx; done() prints the counts as one "SOAK" line.
local function read(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

local work = os.getenv("WORK")
local delay_ms = tonumber(os.getenv("DELAY_MS") or "0")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local json = read(work .. "/mf.json")
  local binary = read(work .. "/mf.bin")
  local length = read(work .. "/mf.bin.len")
  local path = wrk.path
  good_json = wrk.format("POST", path, { ["Content-Type"] = "application/json" }, json)
  good_binary = wrk.format("POST", path, {
    ["Content-Type"] = "application/octet-stream",
    ["Inference-Header-Content-Length"] = length,
  }, binary)
  malformed = {}
  local i = 0
  while true do
    local f = io.open(work .. "/bad-" .. i, "rb")
    if not f then break end
    table.insert(malformed, wrk.format("POST", path, { ["Content-Type"] = "application/json" }, f:read("*a")))
    f:close()
    i = i + 1
  end
  n, good, good_failed, bad, bad_not_4xx = 0, 0, 0, 0, 0
end

function request()
  n = n + 1
  if n % 20 == 0 then
    last_bad = true
    return malformed[math.floor(n / 20) % #malformed + 1]
  end
  last_bad = false
  if n % 2 == 0 then return good_json end
  return good_binary
end

function response(status, headers, body)
  if last_bad then
    bad = bad + 1
    if status < 400 or status >= 500 then bad_not_4xx = bad_not_4xx + 1 end
  else
    good = good + 1
    if status ~= 200 then good_failed = good_failed + 1 end
  end
end

-- wrk's timers count whole milliseconds: the fraction is spent as a 1 ms pause that often.
function delay()
  local whole = math.floor(delay_ms)
  if math.random() < delay_ms - whole then return whole + 1 end
  return whole
end

function done(summary, latency, requests)
  local totals = { good = 0, good_failed = 0, bad = 0, bad_not_4xx = 0 }
  for _, t in ipairs(threads) do
    for k, _ in pairs(totals) do totals[k] = totals[k] + t:get(k) end
  end
  io.write(string.format("SOAK good=%d good_failed=%d bad=%d bad_not_4xx=%d p50_ms=%.3f p99_ms=%.3f\n",
    totals.good, totals.good_failed, totals.bad, totals.bad_not_4xx,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
