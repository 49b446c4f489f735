-- Two CPU-bound workers, forked then isolated, in one run: does the execution model change the
-- speedup? (A paired check for a noisy machine; see `parrun bench` for the experiments.)
--
-- usage: parrun bench/spin_pair.lua
local N = 30000000
local function spin(q) local s = 0 for i = 1, N do s = s + i % 7 end q:put(s) end
local q = parrun.Queue()
local t = parrun.time() spin(q) spin(q) local serial = parrun.time() - t
q:get() q:get()
for _, mode in ipairs({"fork", "isolated"}) do
  t = parrun.time()
  local ps = { parrun.Process(spin, {q}, {mode = mode}), parrun.Process(spin, {q}, {mode = mode}) }
  for _, p in ipairs(ps) do p:start() end
  for _, p in ipairs(ps) do p:join() end
  local el = parrun.time() - t
  q:get() q:get()
  print(("%s: serial %.3f parallel %.3f speedup %.2f"):format(mode, serial, el, serial / el))
end
