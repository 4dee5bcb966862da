-- wrk script: GET the codes listed in a file, one per line, in the file's order, cycling.
-- The runner writes the file: codes drawn with a Zipf-like popularity (loadtest/bench/workload.py),
-- or every code once in shuffled order (cold runs, cache warming).
--   wrk -t1 -c64 -d10s --latency -s zipf.lua http://127.0.0.1:PORT -- CODES_FILE [START]
-- done() prints one line "BENCH_RESULT {json}" with wrk's exact counts and latency percentiles.

local requests = {}
local count = 0
local index = 0

wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
wrk.headers["Accept-Language"] = "en-US,en;q=0.9"

function init(args)
    local path = args[1]
    if path == nil then
        error("zipf.lua: pass the codes file after --")
    end
    local formatted = {}
    for code in io.lines(path) do
        if code ~= "" then
            local req = formatted[code]
            if req == nil then
                req = wrk.format("GET", "/" .. code)
                formatted[code] = req
            end
            count = count + 1
            requests[count] = req
        end
    end
    if count == 0 then
        error("zipf.lua: no codes in " .. path)
    end
    index = tonumber(args[2] or "0") % count
end

function request()
    index = index + 1
    if index > count then
        index = 1
    end
    return requests[index]
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"status_errors":%d,' ..
        '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
        '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
        summary.requests, summary.duration, summary.bytes, e.status,
        e.connect, e.read, e.write, e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency.mean, latency.max))
end
