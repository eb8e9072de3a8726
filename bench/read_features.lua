-- wrk script: GET /v1/features/<view>/e<random id> (keep-alive), 5 features and
-- 2 windows. Environment: FLEDGER_BENCH_TOKEN (a reader), FLEDGER_BENCH_VIEW,
-- FLEDGER_BENCH_ENTITIES (ids are e0 .. e<N-1>), FLEDGER_BENCH_QUERY.
local token = os.getenv("FLEDGER_BENCH_TOKEN")
local view = os.getenv("FLEDGER_BENCH_VIEW")
local entities = tonumber(os.getenv("FLEDGER_BENCH_ENTITIES"))
local query = os.getenv("FLEDGER_BENCH_QUERY")
local prefix = "/v1/features/" .. view .. "/e"
local threads = 0
wrk.headers["Authorization"] = "Bearer " .. token

function setup(thread)
  threads = threads + 1
  thread:set("seed", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + (seed or 0))
end

request = function()
  return wrk.format("GET", prefix .. math.random(0, entities - 1) .. query)
end
