-- wrk script: POST /v1/verify for every key in $KEYS_FILE in turn, with the verifier
-- credential in $VERIFIER. Requests are formatted once, up front, so the load generator
-- spends its time sending, not building strings.
local requests = {}
local i = 0

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("VERIFIER")
  for line in io.lines(os.getenv("KEYS_FILE")) do
    requests[#requests + 1] =
      wrk.format(nil, nil, nil, '{"key":"' .. line .. '","scopes":["orders:read"]}')
  end
end

function request()
  i = i % #requests + 1
  return requests[i]
end
