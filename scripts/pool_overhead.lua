-- Pool overhead: a trivial function over N integers, with map's default chunks and with one
-- task per item (map(f, xs, 1)), printing tasks per second. The second measures what one task
-- costs: dispatch, encoding, the pipe and the call.
--
-- usage: parrun scripts/pool_overhead.lua [N]    (default 100000)

local N = tonumber(arg[1]) or 100000

local function inc(x)
  return x + 1
end

local xs = {}
for i = 1, N do
  xs[i] = i
end
local expected = N * (N + 1) // 2 + N

print(("mode: %s"):format(parrun.mode()))
local pool = parrun.Pool()
pool:map(inc, { 1, 2, 3 }) -- the workers are up and know the function

local function measure(name, chunksize)
  local start = parrun.time()
  local results = pool:map(inc, xs, chunksize)
  local elapsed = parrun.time() - start
  local sum = 0
  for i = 1, #results do
    sum = sum + results[i]
  end
  print(("%s: %d tasks, results %s, %.3f s, %.0f tasks/s"):format(
    name, #results, sum == expected and "ok" or "WRONG", elapsed, N / elapsed))
end

measure("map default chunks", nil)
measure("map chunksize 1", 1)
pool:close()
pool:join()
