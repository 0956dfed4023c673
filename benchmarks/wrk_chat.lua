-- wrk script of benchmarks.peer: chat completions, each with a prompt no other request has.
--
--   wrk ... -s benchmarks/wrk_chat.lua URL -- WINDOWS_FILE MODEL FIRST_NUMBER MAX_TOKENS PER_THREAD
--
-- WINDOWS_FILE holds prompt texts, one a line, already escaped for a JSON string (no quotes).
-- Request k of thread t takes a window in turn and ends it with its number, FIRST_NUMBER +
-- t * PER_THREAD + k, like benchmarks.workload's prompts: the number stands at the prompt's end,
-- which is what the router embeds, so no request is answered from a cache. When the run ends, one
-- line "WRK_RESULT {json}" gives its counts and latency percentiles (microseconds).

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  windows = {}
  for line in io.lines(args[1]) do
    windows[#windows + 1] = line
  end
  if #windows == 0 then
    error("no prompt windows in " .. args[1])
  end
  head = '{"model":"' .. args[2] .. '","max_tokens":' .. args[4] .. ',"messages":[{"role":"user","content":"'
  number = tonumber(args[3]) + id * tonumber(args[5])
  sent = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  local body = head .. windows[sent % #windows + 1] .. " (request " .. string.format("%d", number + sent) .. ')"}]}'
  sent = sent + 1
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
