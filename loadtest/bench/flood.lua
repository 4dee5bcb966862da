-- wrk script: GET random codes that no link has, a new one per request (the random-code flood).
--   wrk -t1 -c64 -d10s --latency -s flood.lua http://127.0.0.1:PORT -- [SEED]
-- Codes are "zz" and 12 random letters and digits (the bench seeds "bn000000"...): all 404.
-- done() prints one line "BENCH_RESULT {json}" with wrk's exact counts, as zipf.lua's does.

local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
local picked = {}

wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"

function init(args)
    math.randomseed(tonumber(args[1] or "1"))
end

function request()
    for i = 1, 12 do
        local n = math.random(1, 62)
        picked[i] = chars:sub(n, n)
    end
    return wrk.format("GET", "/zz" .. table.concat(picked))
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
