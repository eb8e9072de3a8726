-- wrk script: one feature event per POST /v1/events (keep-alive).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("FLEDGER_BENCH_TOKEN")
local n = 0
request = function()
  n = n + 1
  local body = string.format(
    '{"view":"user_activity","entity_id":"u%d","features":{"dwell_ms":%d.5,"last_click":"p%d","is_mobile":true,"cart_items":%d}}',
    n % 100000, n % 5000, n % 97, n % 7)
  return wrk.format(nil, "/v1/events", nil, body)
end
