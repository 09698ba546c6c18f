-- wrk script: POST /v1/verify for every key in $KEYS_FILE in turn, with the verifier
-- credential in $VERIFIER. Requests are formatted once, up front, so the load generator
-- spends its time sending, not building strings.
--
-- With $BATCH set (above 0), POST /v1/verify/batch bodies of $BATCH keys each instead
-- (aim wrk at that path): wrk counts requests, so verifications per second are its
-- requests per second times $BATCH.
local requests = {}
local i = 0

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("VERIFIER")
  local batch = tonumber(os.getenv("BATCH") or "0")
  local entries = {}
  for line in io.lines(os.getenv("KEYS_FILE")) do
    local entry = '{"key":"' .. line .. '","scopes":["orders:read"]}'
    if batch == 0 then
      requests[#requests + 1] = wrk.format(nil, nil, nil, entry)
    else
      entries[#entries + 1] = entry
      if #entries == batch then
        requests[#requests + 1] =
          wrk.format(nil, nil, nil, '{"requests":[' .. table.concat(entries, ",") .. ']}')
        entries = {}
      end
    end
  end
end

function request()
  i = i % #requests + 1
  return requests[i]
end
