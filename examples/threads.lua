-- A first look at parrun threads: run it with `parrun examples/threads.lua`.
--
-- Three worker threads take jobs from one queue and put their answers on another. A lock
-- guards a counter that every worker updates. The main thread collects the answers and
-- prints them in job order, so the output is the same on every run.

local jobs = parrun.Queue()     -- work to do: the numbers to square
local results = parrun.Queue()  -- finished work: {job = n, square = n * n}
local lock = parrun.Lock()      -- guards `done`
local done = 0                  -- how many jobs the workers finished, all together

-- Each worker gets the two queues as arguments; `lock` and `done` it shares as upvalues.
local function worker(jobs, results)
  while true do
    local n = jobs:get()        -- waits (without holding the GIL) until a job arrives
    if n == "stop" then
      return
    end
    parrun.sleep(0.01)          -- pretend this is slow work, e.g. a network call
    results:put({ job = n, square = n * n })
    -- Only one thread at a time runs this function: the lock is released when it returns,
    -- even if it raises an error.
    lock:with(function()
      done = done + 1
    end)
  end
end

local workers = {}
for i = 1, 3 do
  workers[i] = parrun.Thread(worker, { jobs, results }, "worker-" .. i)
  workers[i]:start()
end

for n = 1, 10 do
  jobs:put(n)
end
for _ = 1, #workers do
  jobs:put("stop")              -- one "stop" per worker
end
for _, w in ipairs(workers) do
  w:join()
end

-- The answers arrive in whatever order the workers finished: sort them by job.
local answers = {}
while not results:empty() do
  answers[#answers + 1] = results:get()
end
table.sort(answers, function(a, b) return a.job < b.job end)

local sum = 0
for _, a in ipairs(answers) do
  print(("%d squared is %d"):format(a.job, a.square))
  sum = sum + a.square
end
print(("%d jobs done by %d workers, sum of squares %d"):format(done, #workers, sum))
