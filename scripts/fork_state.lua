-- What a pool costs in memory and in start-up when the script holds a big table, in the forms
-- of issue 15's table (N strings, 2,000,000 by default):
--
-- - `idle worker memory`: the private dirty memory (smaps_rollup) of a forked worker that has
--   run one task and waits, read by the parent before the script holds anything big (fork);
-- - `big table build time`: building the global table of N strings `big`, for reference;
-- - `inherited table private memory`: a forked worker that reads every string of `big`
--   (20 rounds) while making garbage, its private dirty memory at the end (fork; as
--   bench/fork_memory.lua, which prints it against the heap too);
-- - `isolated pool create with a big global time`: Pool(2) and a first trivial map while the
--   script holds `big` (isolated: each worker's engine gets its copy);
-- - `first map with a global table time`: a pool's first map of a function that reads `big`
--   as a global (in fork mode the worker already holds it);
-- - `pool create with a big local time` and `first map with a local upvalue table time`: a
--   new pool, started while the script holds the table in a local (the global gone), and its
--   first map of a function that reads it as a local upvalue (a forked worker takes its own
--   copy, elsewhere the table is copied to each worker);
-- - `map again with an unchanged local upvalue table time`: that function's second map (its
--   upvalues are checked, the table read in place, not sent again).
--
-- Memory figures need /proc (Linux) and a worker process of its own: in other modes they are
-- not printed.
--
-- usage: parrun scripts/fork_state.lua [N]    (default 2000000)

local N = tonumber(arg[1]) or 2000000
-- Garbage tables a round: at the full size about 7 MB a round, so that the worker's
-- collector runs during the 20 rounds.
local JUNK = math.max(1, N // 20)
local fork = parrun.mode() == "fork"

local function private_dirty(pid)
  local f = io.open(("/proc/%s/smaps_rollup"):format(pid or "self"))
  if not f then
    return nil
  end
  local text = f:read("a")
  f:close()
  local kb = text:match("Private_Dirty:%s+(%d+)")
  return kb and tonumber(kb) * 1024
end

local function memory(name, bytes)
  if bytes then
    print(("%s memory: %.3f MB"):format(name, bytes / 1e6))
  end
end

print(("mode: %s"):format(parrun.mode()))

if fork then
  local pool = parrun.Pool(1)
  local pid = pool:apply(parrun.getpid)
  memory("idle worker", private_dirty(pid))
  pool:close()
  pool:join()
end

local start = parrun.time()
big = {}
for i = 1, N do
  big[i] = "s" .. i
end
print(("big table build time: %.6f s"):format(parrun.time() - start))

function probe()
  local total = 0
  for _ = 1, 20 do
    for i = 1, #big do
      total = total + #big[i]
    end
    for i = 1, JUNK do
      local junk = { i }
    end
  end
  return { private_dirty(), total }
end

if fork then
  local heap = collectgarbage("count") * 1024
  local pool = parrun.Pool(1)
  local r = pool:apply(probe)
  pool:close()
  pool:join()
  memory("inherited table private", r[1])
  print(("(the heap: %.1f MB; the worker's private memory is %.0f%% of it)"):format(
    heap / 1e6, 100 * r[1] / heap))
end

local idx = {}
for i = 1, 4 do
  idx[i] = 1 + (i - 1) * (N // 4)
end
local expected = {}
for i, n in ipairs(idx) do
  expected[i] = #big[n]
end
local function check(lengths)
  for i = 1, #idx do
    assert(lengths[i] == expected[i], "a wrong length")
  end
end

start = parrun.time()
local pool = parrun.Pool(2)
pool:map(math.abs, { 1, 2 })
if parrun.mode() == "isolated" then
  print(("isolated pool create with a big global time: %.6f s"):format(parrun.time() - start))
end

start = parrun.time()
local lengths = pool:map(function(i) return #big[i] end, idx)
print(("first map with a global table time: %.6f s"):format(parrun.time() - start))
check(lengths)

pool:close()
pool:join()

-- The table as a local, when a new pool starts (a value reachable from the globals is found
-- again in the worker without a copy, so the global goes). A forked worker has its own copy
-- of it: the pool's start reads the tables the script holds in locals (their digests), and a
-- task function whose upvalue is one of them, unchanged, names the worker's copy instead of
-- sending it. Elsewhere the table is copied to each worker by the first map.
local data = big
big = nil
start = parrun.time()
pool = parrun.Pool(2)
pool:map(math.abs, { 1, 2 })
print(("pool create with a big local time: %.6f s"):format(parrun.time() - start))
local function length(i)
  return #data[i]
end
start = parrun.time()
lengths = pool:map(length, idx)
print(("first map with a local upvalue table time: %.6f s"):format(parrun.time() - start))
check(lengths)
-- The same function again, its table unchanged: its upvalues are checked (the table read in
-- place), not copied again.
start = parrun.time()
lengths = pool:map(length, idx)
print(("map again with an unchanged local upvalue table time: %.6f s"):format(parrun.time() - start))
check(lengths)
pool:close()
pool:join()
