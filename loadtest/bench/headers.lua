-- wrk script: GET the codes of a file in its order, cycling (as zipf.lua), each request with a
-- User-Agent, Referer and Accept-Language picked for it, to load the edge with the header
-- diversity of real traffic. The runner writes both files (loadtest/bench/headers.py, seeded).
--   wrk -t1 -c64 -d10s --latency -s headers.lua http://127.0.0.1:PORT -- CODES START HEADERS MODE [SALT]
-- HEADERS holds lines "ua<TAB>value", "referer<TAB>value", "language<TAB>value", each kind listed
-- from the most to the least popular; a value is picked with Zipf popularity (weight 1/rank).
-- MODE "mix": every header from its list. MODE "distinct": the User-Agent is a browser's that no
-- request sent before (a counter and SALT in its version), Referer and Accept-Language as in "mix".
-- done() prints one line "BENCH_RESULT {json}" with wrk's exact counts and latency percentiles.

local codes = {}
local lists = { ua = {}, referer = {}, language = {} }
local cumulative = {}
local count = 0
local index = 0
local distinct = false
local salt = 0
local serial = 0
local head = ""

local systems = {
    "Windows NT 10.0; Win64; x64",
    "Macintosh; Intel Mac OS X 10_15_7",
    "X11; Linux x86_64",
    "Linux; Android 14; Pixel 8",
    "Linux; Android 13; SM-A546B",
}

local function zipf_cumulative(n)
    local sums = {}
    local total = 0
    for rank = 1, n do
        total = total + 1 / rank
        sums[rank] = total
    end
    return sums
end

local function pick(kind)
    local values = lists[kind]
    local sums = cumulative[kind]
    local target = math.random() * sums[#sums]
    local low, high = 1, #sums
    while low < high do
        local mid = math.floor((low + high) / 2)
        if sums[mid] < target then
            low = mid + 1
        else
            high = mid
        end
    end
    return values[low]
end

function init(args)
    local codes_path, headers_path = args[1], args[3]
    if codes_path == nil or headers_path == nil or args[4] == nil then
        error("headers.lua: pass CODES START HEADERS MODE after --")
    end
    distinct = args[4] == "distinct"
    for code in io.lines(codes_path) do
        if code ~= "" then
            count = count + 1
            codes[count] = code
        end
    end
    for line in io.lines(headers_path) do
        local kind, value = line:match("^(%a+)\t(.*)$")
        if kind ~= nil and lists[kind] ~= nil then
            table.insert(lists[kind], value)
        end
    end
    for kind, values in pairs(lists) do
        if #values == 0 then
            error("headers.lua: no " .. kind .. " in " .. headers_path)
        end
        cumulative[kind] = zipf_cumulative(#values)
    end
    if count == 0 then
        error("headers.lua: no codes in " .. codes_path)
    end
    index = tonumber(args[2]) % count
    salt = tonumber(args[5] or "0")
    math.randomseed(12345 + salt)
    head = "Host: " .. wrk.headers["Host"] .. "\r\n"
end

function request()
    index = index + 1
    if index > count then
        index = 1
    end
    local agent
    if distinct then
        serial = serial + 1
        agent = string.format(
            "Mozilla/5.0 (%s) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/%d.0.%d.%d Safari/537.36",
            systems[serial % #systems + 1], 100 + serial % 31, serial, salt)
    else
        agent = pick("ua")
    end
    return "GET /" .. codes[index] .. " HTTP/1.1\r\n" .. head ..
        "User-Agent: " .. agent .. "\r\nReferer: " .. pick("referer") ..
        "\r\nAccept-Language: " .. pick("language") .. "\r\n\r\n"
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
