-- Two processes compute in parallel and hand their results back on a Queue: a process's
-- return value is lost, so results travel through the queue. Prints 13 (2 + 11).

local function add(queue, a, b)
  queue:put(a + b)
end

local queue = parrun.Queue()
local p1 = parrun.Process(add, { queue, 1, 1 })
local p2 = parrun.Process(add, { queue, 10, 1 })
p1:start()
p2:start()
p1:join()
p2:join()
print(queue:get() + queue:get())
