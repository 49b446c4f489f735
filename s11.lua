-- semaphore waiters in a forked child killed by kill -9 from outside while waiting and while holding
local P = parrun
S = P.Semaphore(2)
local ps = {}
for i = 1, 4 do ps[i] = P.Process(function(i) S:acquire(); P.sleep(100) end, {i}); ps[i]:start() end
P.sleep(0.3)
print("value", tostring(S))   -- 0: two hold, two wait
for i = 1, 4 do os.execute("kill -9 " .. ps[i].pid) end
for i = 1, 4 do ps[i]:join() end
for i = 1, 4 do io.write(tostring(ps[i].exitcode), " ") end print()
print("after kills", tostring(S))   -- Python: 0 (holders' units lost)
S:release(2)
local ok = P.Process(function() assert(S:acquire(1)); assert(S:acquire(1)); print("child got 2") end)
ok:start(); ok:join(); print(ok.exitcode, tostring(S))
