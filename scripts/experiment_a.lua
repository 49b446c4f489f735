-- Experiment A: testing the GIL.
--
-- The same work -- summing four million integers -- done twice:
--   normal():      in the main thread, one element after another;
--   multiThread(): split over 4 threads, each summing a quarter.
-- The threads share one interpreter and take turns holding its global lock (the GIL), so
-- only one of them runs Lua code at any moment: the threaded version is no faster, and the
-- extra switching can even make it a little slower.
--
-- usage: parrun scripts/experiment_a.lua [N]    (N: list length, default 1000000)

local N = tonumber(arg[1]) or 1000000

-- The integers 0 .. N-1 (Lua arrays start at 1, so element i holds i - 1).
local numbers = {}
for i = 1, N do
  numbers[i] = i - 1
end

-- Sums a list with a plain loop: pure CPU work, the GIL is never released voluntarily.
local function sum_list(list)
  local total = 0
  for i = 1, #list do
    total = total + list[i]
  end
  return total
end

-- A copy of a list, so that each thread works on its own data.
local function copy(list)
  return table.move(list, 1, #list, 1, {})
end

-- One thread: sum the list and hand the partial sum back on the queue.
local function worker(list, results)
  results:put(sum_list(list))
end

-- The lists are made before the clock starts, for both: Python's `num_list * 4` and
-- `num_list[:]` are memory copies that take a few percent of the sums, but Lua builds a table
-- by growing it, which took 5 to 10 times as long as summing it (and longer for one table of
-- 4 * N than for four of N), so the timings measured the building, not the GIL: the threads
-- came out up to 1.7x "faster".
local function normal()
  -- The list repeated 4 times: 4 * N elements.
  local big = {}
  for _ = 1, 4 do
    table.move(numbers, 1, N, #big + 1, big)
  end
  local start = parrun.time()
  local total = sum_list(big)
  local elapsed = parrun.time() - start
  print(("serial total: %d"):format(total))
  print(("serial time: %.3f s"):format(elapsed))
  return elapsed
end

local function multiThread()
  local copies = {}
  for i = 1, 4 do
    copies[i] = copy(numbers)
  end
  local start = parrun.time()
  local results = parrun.Queue()
  local threads = {}
  for i = 1, 4 do
    threads[i] = parrun.Thread(worker, { copies[i], results })
    threads[i]:start()
  end
  for _, t in ipairs(threads) do
    t:join()
  end
  -- Collect the 4 partial sums.
  local total = 0
  for _ = 1, 4 do
    total = total + results:get()
  end
  local elapsed = parrun.time() - start
  print(("threads total: %d"):format(total))
  print(("threads time: %.3f s"):format(elapsed))
  return elapsed
end

local serial = normal()
local threaded = multiThread()
if serial > 0 then
  print(("threads/serial time ratio: %.2f"):format(threaded / serial))
else
  print("threads/serial time ratio: n/a")
end
