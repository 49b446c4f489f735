-- parrun's Lua glue, run once per Lua state before the script.
--
-- Every host builtin is a raw Rust function returning (status, payload): 0 = done, payload is
-- the result; 2 = error, payload is the message; 1 = must wait, payload is a request that the
-- thread's driver runs with the GIL released. A raw function cannot block itself: mlua holds
-- its own lock for the whole `resume`, so waiting inside would stop every other thread.
-- Here each raw function is wrapped so that a request is yielded to the driver.
local WAIT, builtins, run_here, write_line, drivers = ...

local co_create, co_resume, co_status = coroutine.create, coroutine.resume, coroutine.status
local co_yield, co_running, co_isyieldable = coroutine.yield, coroutine.running, coroutine.isyieldable
local error, select, tostring, concat, pack, unpack, pcall =
  error, select, tostring, table.concat, table.pack, table.unpack, pcall

-- Runs a request: yielded to the driver (GIL released) where possible. Where Lua cannot yield
-- (inside a C call: a table.sort comparator, a gsub callback, a metamethod called from C, a
-- module being required) it runs in place and keeps the GIL, as an extension that does not
-- release the GIL does in CPython.
local function wait(request)
  if co_isyieldable() then
    return co_yield(WAIT, request)
  end
  return run_here(request)
end

local function wrap(raw)
  return function(...)
    local status, payload = raw(...)
    if status == 0 then
      return payload
    elseif status == 1 then
      local ok, result = wait(payload)
      if ok then
        return result
      end
      error(result, 2)
    end
    error(payload, 2)
  end
end

local parrun = {}
for name, raw in pairs(builtins.functions) do
  parrun[name] = wrap(raw)
end

local classes = {}
for class, methods in pairs(builtins.methods) do
  local wrapped = {}
  for name, raw in pairs(methods) do
    wrapped[name] = wrap(raw)
  end
  classes[class] = wrapped
end

-- obj:with(f, ...): enter, call f, exit even if f fails, then return f's results or re-raise.
for class, scoped in pairs(builtins.scoped) do
  local methods = classes[class]
  for name, pair in pairs(scoped) do
    local enter, exit = methods[pair[1]], methods[pair[2]]
    methods[name] = function(self, f, ...)
      enter(self)
      local results = pack(pcall(f, ...))
      exit(self)
      if not results[1] then
        error(results[2], 0)
      end
      return unpack(results, 2, results.n)
    end
  end
end

-- The script's own coroutines: a request yielded inside one is passed out to the driver and
-- its answer passed back in, so blocking calls work (and release the GIL) inside coroutines.
local function relay(co, ok, first, ...)
  if ok and first == WAIT and co_status(co) == "suspended" then
    return relay(co, co_resume(co, wait((...))))
  end
  return ok, first, ...
end

coroutine.resume = function(co, ...)
  return relay(co, co_resume(co, ...))
end

local function unwrap(ok, ...)
  if ok then
    return ...
  end
  error((...), 0)
end

coroutine.wrap = function(f)
  local co = co_create(f)
  return function(...)
    return unwrap(relay(co, co_resume(co, ...)))
  end
end

-- Each script thread (the main chunk too) runs in a coroutine driven from Rust; to the script
-- it must look like the main thread does under the stock interpreter.
coroutine.running = function()
  local co, ismain = co_running()
  return co, ismain or drivers[co] == true
end

coroutine.isyieldable = function(co)
  co = co or co_running()
  if drivers[co] then
    return false
  end
  return co_isyieldable(co)
end

coroutine.yield = function(...)
  if drivers[co_running()] then
    error("attempt to yield from outside a coroutine", 2)
  end
  return co_yield(...)
end

-- One print is one write(2): lines from different threads never mix.
print = function(...)
  local n = select("#", ...)
  local parts = { ... }
  for i = 1, n do
    parts[i] = tostring(parts[i])
  end
  write_line(concat(parts, "\t", 1, n))
end

-- Calling an object iterates it: `for x in pool:imap(f, xs) do ... end`.
local function iterate(self)
  return self:next()
end

-- A pool task: f over a chunk of calls in one coroutine. `single`: calls[i] is the one
-- argument of call i; otherwise calls[i] is an argument list with its length in `n`.
local function run_chunk(f, calls, count, single, results)
  if single then
    for i = 1, count do
      results[i] = f(calls[i])
    end
  else
    for i = 1, count do
      local args = calls[i]
      results[i] = f(unpack(args, 1, args.n))
    end
  end
  return results
end

return parrun, classes, iterate, run_chunk
