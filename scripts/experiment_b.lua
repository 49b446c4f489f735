-- Experiment B: CPU-bound work done serially, by two processes, by two threads and by two
-- isolated threads.
--
-- calculate() sums i * i for i in 0 .. N-1 and puts the sum on a queue. The exact sum for
-- N = 10,000,000 is 333333283333335000000, beyond a 64-bit integer, so it is kept in two
-- limbs: hi * 10^15 + lo (each term i * i < 10^15, so one carry at most per step).
-- Processes run on separate cores; threads share one interpreter lock (the GIL) and so are no
-- faster than serial; isolated threads each have an engine of their own, so they run on
-- separate cores without fork. "processes" follow --mode (fork by default).
--
-- usage: parrun scripts/experiment_b.lua [N]    (default 10000000)

local N = tonumber(arg[1]) or 10000000
local BASE = 1000000000000000 -- 10^15

local function calculate(queue)
  local hi, lo = 0, 0
  for i = 0, N - 1 do
    lo = lo + i * i
    if lo >= BASE then
      hi, lo = hi + 1, lo - BASE
    end
  end
  queue:put({ hi, lo })
end

-- Adds the two partial sums on the queue and formats the exact total.
local function total_of(queue)
  local a, b = queue:get(), queue:get()
  local hi, lo = a[1] + b[1], a[2] + b[2]
  if lo >= BASE then
    hi, lo = hi + 1, lo - BASE
  end
  if hi == 0 then
    return tostring(lo)
  end
  return ("%d%015d"):format(hi, lo)
end

local function timed(name, run)
  local queue = parrun.Queue()
  local start = parrun.time()
  run(queue)
  local elapsed = parrun.time() - start
  print(("%s total: %s"):format(name, total_of(queue)))
  print(("%s time: %.3f s"):format(name, elapsed))
  return elapsed
end

print(("mode: %s"):format(parrun.mode()))
local serial = timed("serial", function(queue)
  calculate(queue)
  calculate(queue)
end)

local function in_parallel(kind, options)
  return function(queue)
    local workers = { kind(calculate, { queue }, options), kind(calculate, { queue }, options) }
    for _, w in ipairs(workers) do w:start() end
    for _, w in ipairs(workers) do w:join() end
  end
end

local processes = timed("processes", in_parallel(parrun.Process))
local threads = timed("threads", in_parallel(parrun.Thread))
local isolated = timed("isolated threads", in_parallel(parrun.Process, { mode = "isolated" }))
print(("processes speedup: %.2fx"):format(serial / processes))
print(("threads speedup: %.2fx"):format(serial / threads))
print(("isolated threads speedup: %.2fx"):format(serial / isolated))
