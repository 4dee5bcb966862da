-- wrk script: create links through the API, every request a new URL (the code is generated).
--   wrk -t1 -c32 -d5s --latency -s api_create.lua http://127.0.0.1:PORT -- API_KEY
-- Non-2xx answers are counted by wrk as status errors; done() prints "BENCH_RESULT {json}".

local counter = 0
local prefix = tostring(os.time())

function init(args)
    wrk.method = "POST"
    wrk.path = "/api/v1/links"
    wrk.headers["Authorization"] = "Bearer " .. args[1]
    wrk.headers["Content-Type"] = "application/json"
end

function request()
    counter = counter + 1
    local body = string.format('{"url":"https://example.com/bench/%s/%d"}', prefix, counter)
    return wrk.format(nil, nil, nil, body)
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
