-- The article's process pool example: ten tasks on a pool of cpu_count() workers.
--
-- square(n) prints when it starts and finishes (with the worker's pid), sleeps a random
-- while, and returns n * n. The first cpu_count() tasks start at once; each later one starts
-- when a worker frees up. apply_async returns at once; get() waits for the result.
--
-- usage: parrun examples/squares.lua [MAX_SLEEP]    (seconds, default 3)

local max_sleep = tonumber(arg[1]) or 3

local function square(n)
  print("process id: " .. parrun.getpid() .. " started")
  parrun.sleep(parrun.random() * max_sleep)
  print("process id: " .. parrun.getpid() .. " finished")
  return n * n
end

local pool = parrun.Pool() -- as many workers as cores
local results = {}
for i = 0, 9 do
  results[#results + 1] = pool:apply_async(square, { i })
end
pool:close() -- no more tasks
pool:join() -- wait for the workers to finish
for _, result in ipairs(results) do
  print(result:get())
end

-- map keeps the input order.
local squares = parrun.Pool():map(square, { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 })
print("[" .. table.concat(squares, ", ") .. "]")
