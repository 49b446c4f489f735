-- How much of an inherited table a forked worker makes private (Private_Dirty of
-- /proc/self/smaps_rollup) by reading it. usage: parrun bench/fork_memory.lua [STRINGS] [GARBAGE_TABLES_PER_ROUND]

local N = tonumber(arg[1]) or 2000000
local JUNK = tonumber(arg[2]) or 100000
big = {}
for i = 1, N do big[i] = "s" .. i end
local function private_dirty()
  local f = assert(io.open("/proc/self/smaps_rollup"))
  local t = f:read("a") f:close()
  return tonumber(t:match("Private_Dirty:%s+(%d+)")) * 1024
end
function probe(_)
  local before = private_dirty()
  local total = 0
  for round = 1, 20 do
    for i = 1, #big do total = total + #big[i] end
    for i = 1, JUNK do local junk = {i} end
  end
  return { before, private_dirty(), total }
end

local heap = collectgarbage("count") * 1024
local pool = parrun.Pool(1)
local r = pool:map(probe, { 1 })[1]
print(("garbage %d a round: heap %.1f MB, worker private dirty %.1f MB at task start, %.1f MB at its end = %.0f%% of the heap"):format(
  JUNK, heap / 1e6, r[1] / 1e6, r[2] / 1e6, 100 * r[2] / heap))
pool:close() pool:join()
