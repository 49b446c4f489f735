-- What a pool costs, in the forms of issue 15's table: a map of N integers with the default
-- chunks on a pool started and stopped inside the timing, one task per item (map(f, xs, 1))
-- and N apply_async then a get of each on a warm pool, as tasks per second; and a pool's
-- start (Pool(4), one task, close and join), the median of several in the run.
--
-- usage: parrun scripts/pool_costs.lua [N]    (default 100000)

local N = tonumber(arg[1]) or 100000
-- Enough starts for a steady median at the full size, few at a test's.
local STARTS = math.max(3, math.min(11, N // 10000 + 1))

local function inc(x)
  return x + 1
end

print(("mode: %s"):format(parrun.mode()))

-- First, while the script is small: a fork copies the parent's page tables, so a start after
-- the big runs below would measure their memory too.
local starts = {}
for i = 1, STARTS do
  local start = parrun.time()
  local p = parrun.Pool(4)
  assert(p:apply(inc, { 1 }) == 2)
  p:close()
  p:join()
  starts[i] = parrun.time() - start
end
table.sort(starts)
print(("pool start time: %.6f s"):format(starts[(STARTS + 1) // 2]))

local xs = {}
for i = 1, N do
  xs[i] = i
end
local expected = N * (N + 1) // 2 + N

local function report(name, results, elapsed)
  local sum = 0
  for i = 1, #results do
    sum = sum + results[i]
  end
  print(("%s: %d tasks, results %s, %.3f s, %.0f tasks/s"):format(
    name, #results, sum == expected and "ok" or "WRONG", elapsed, N / elapsed))
end

local start = parrun.time()
local pool = parrun.Pool()
local results = pool:map(inc, xs)
pool:close()
pool:join()
report("map default chunks incl. start", results, parrun.time() - start)

pool = parrun.Pool()
pool:map(inc, { 1, 2, 3 }) -- the workers are up and know the function
start = parrun.time()
results = pool:map(inc, xs, 1)
report("map chunksize 1", results, parrun.time() - start)

start = parrun.time()
local pending = {}
for i = 1, N do
  pending[i] = pool:apply_async(inc, { i })
end
results = {}
for i = 1, N do
  results[i] = pending[i]:get()
end
report("apply_async", results, parrun.time() - start)
pool:close()
pool:join()
