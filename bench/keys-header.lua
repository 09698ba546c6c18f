-- keys-header.lua: wrk script that sends each request with a different API key.
--
-- Generic on purpose, so Keyward and its peers are driven the same way:
--   KEYS_FILE   path of a file with one plaintext key per line (required)
--   KEY_HEADER  header that carries the key (default "Authorization")
--   KEY_PREFIX  text put before the key in that header, e.g. "Api-Key " or
--               "Bearer " (default: nothing)
--   WRK_THREADS the -t value, only needed when it is above 1 (see below)
--
-- Keys are used in file order and the list wraps around, so with N keys every
-- key is verified once per N requests: the server cannot serve the run from a
-- handful of hot keys, and the key set size chosen by the caller is the one
-- that is exercised.
--
-- Usage: KEYS_FILE=keys.txt KEY_HEADER=Authorization KEY_PREFIX='Api-Key ' \
--          wrk -t1 -c32 -d15s --latency -s keys-header.lua http://127.0.0.1:PORT/check

local keys_file = os.getenv("KEYS_FILE")
if keys_file == nil or keys_file == "" then
  error("keys-header.lua: set KEYS_FILE to a file with one key per line")
end
local header = os.getenv("KEY_HEADER")
if header == nil or header == "" then header = "Authorization" end
local prefix = os.getenv("KEY_PREFIX") or ""

-- Header values are read here, in every Lua state wrk makes (the main one
-- and one per thread); each thread turns them into finished requests in
-- init(), so that the load generator spends its time sending, not building
-- strings (as bench/verify-json.lua does for Keyward).
local values = {}
for line in io.lines(keys_file) do
  line = line:gsub("%s+$", "")
  if line ~= "" then values[#values + 1] = prefix .. line end
end
if #values == 0 then
  error("keys-header.lua: no keys in " .. keys_file)
end

-- With several threads, thread i starts at key i and steps by the thread
-- count, so together the threads still walk the list in order without all
-- starting on the same key. setup() runs in the main state before each
-- thread starts and hands each its number.
local next_id = 0
function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
end

local step = tonumber(os.getenv("WRK_THREADS") or "1") or 1
local requests = {}
local index = 0

function init(args)
  for i, value in ipairs(values) do
    requests[i] = wrk.format("GET", nil, { [header] = value }, nil)
  end
  index = (tonumber(thread_id) or 0) % #requests
end

-- (wrk calls request() once on thread 1 to check the script before the run,
-- so that thread's first measured request uses the second key; harmless.)
function request()
  local r = requests[index + 1]
  index = (index + step) % #requests
  return r
end
