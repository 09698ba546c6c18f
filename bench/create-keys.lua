-- wrk script: mint keys through POST /v1/keys as fast as the server acknowledges them,
-- writing each returned key to $KEYS_FILE. When $KEYS have been acknowledged it writes
-- "<seconds from first request to last acknowledgement>" to $KEYS_FILE.time and stops
-- (wrk itself runs on until -d; load.sh interrupts it).
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_usec; } timeval;
  int gettimeofday(timeval *tv, void *tz);
]]
local function now()
  local tv = ffi.new("timeval")
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) + tonumber(tv.tv_usec) / 1e6
end

local out, req, t0
local wanted = tonumber(os.getenv("KEYS") or "20000")
local got = 0

function init(args)
  out = assert(io.open(os.getenv("KEYS_FILE"), "w"))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("ROOT_KEY")
  wrk.body = '{"identity_id":"' .. os.getenv("IDENTITY") .. '","scopes":["orders:read","billing:*"]}'
  req = wrk.format()
end

function request()
  t0 = t0 or now()
  return req
end

function response(status, headers, body)
  if status == 201 and got < wanted then
    local key = body:match('"key":"([^"]+)"')
    if key then
      out:write(key, "\n")
      got = got + 1
      if got == wanted then
        out:close()
        local t = assert(io.open(os.getenv("KEYS_FILE") .. ".time", "w"))
        t:write(string.format("%.6f\n", now() - t0))
        t:close()
        wrk.thread:stop()
      end
    end
  end
end
