-- wrk script: POST /v1/events with 1000 events per request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("FLEDGER_BENCH_TOKEN")
local events = {}
for i = 1, 1000 do
  events[i] = string.format(
    '{"view":"user_activity","entity_id":"u%d","features":{"dwell_ms":%d.5,"last_click":"p%d","is_mobile":false,"cart_items":%d}}',
    i, i, i % 97, i % 7)
end
wrk.body = '{"events":[' .. table.concat(events, ",") .. ']}'
wrk.path = "/v1/events"
