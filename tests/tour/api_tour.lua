P = parrun

local q = P.Queue()
local lock = P.Lock()
local counter = {n = 0}
local function worker(id, n)
  for i = 1, n do lock:with(function() counter.n = counter.n + 1 end) end
  q:put({id = id, n = n})
end
local ts = {}
for id = 1, 3 do ts[id] = P.Thread(worker, {id, 50}, "w" .. id) ts[id]:start() end
for _, t in ipairs(ts) do t:join(5) print(t.name, t:is_alive()) end
local got = {}
while not q:empty() do local v = q:get() got[#got + 1] = v.id .. ":" .. v.n end
table.sort(got)
print(table.concat(got, " "), q:qsize(), q:empty(), q:full())
print("lock", lock:acquire(), lock:locked(), lock:acquire(false), lock:acquire(0.05))
lock:release()
print("locked after release", lock:locked())
print(pcall(q.get_nowait, q))
print(pcall(q.get, q, 0.05))
print(pcall(q.get, q, false))
local bq = P.Queue(1)
bq:put(1)
print(bq:full(), pcall(bq.put_nowait, bq, 2))
print(pcall(bq.put, bq, 2, 0.05))
print(pcall(bq.put, bq, 2, true, 0.05))
print("counter (gil shares, threads always)", counter.n)
local t = P.Thread(function() P.sleep(0.2) end) t:start()
print("join timeout alive", (function() t:join(0.01) return t:is_alive() end)())
t:join()
print("alive after join", t:is_alive())
print(pcall(t.start, t))

local function sq(x) return x * x end
local function add(a, b) return a + b end
local function bad(x) if x == 3 then error("bad " .. x) end return x end
local pool = P.Pool(2)
print("map", table.concat(pool:map(sq, {1, 2, 3, 4, 5}), " "))
print("map chunk", table.concat(pool:map(sq, {1, 2, 3, 4, 5}, 2), " "))
print("map empty", #pool:map(sq, {}))
print("starmap", table.concat(pool:starmap(add, {{1, 2}, {3, 4}}), " "))
local out = {}
for v in pool:imap(sq, {3, 1, 2}) do out[#out + 1] = v end
print("imap", table.concat(out, " "))
out = {}
for v in pool:imap_unordered(sq, {3, 1, 2}) do out[#out + 1] = v end
table.sort(out)
print("imap_unordered", table.concat(out, " "))
print("apply", pool:apply(add, {2, 3}))
local cb = {}
local r1 = pool:apply_async(sq, {7}, function(v) cb[#cb + 1] = "ok " .. v end, function(e) cb[#cb + 1] = "err " .. e end)
local r2 = pool:apply_async(bad, {3}, function(v) cb[#cb + 1] = "ok " .. v end, function(e) cb[#cb + 1] = "err " .. tostring(e) end)
print("get", r1:get(5))
print("get bad", pcall(r2.get, r2, 5))
r2:wait(5)
print("ready", r1:ready(), r2:ready(), "successful", r1:successful(), r2:successful())
local ma = pool:map_async(sq, {1, 2, 3})
print("map_async", table.concat(ma:get(5), " "))
local sa = pool:starmap_async(add, {{1, 1}, {2, 2}})
print("starmap_async", table.concat(sa:get(5), " "))
print("map bad", pcall(pool.map, pool, bad, {1, 2, 3, 4}))
print("join open", pcall(pool.join, pool))
pool:close()
print("apply closed", pcall(pool.apply, pool, sq, {1}))
pool:join()
table.sort(cb)
print("callbacks", table.concat(cb, " | "))
local st = pool:stats()
print("stats", st.workers, st.alive, st.queued, st.running)
local p2 = P.Pool(1)
local slow = p2:apply_async(function() P.sleep(5) return 1 end, {})
p2:terminate()
print("terminated", pcall(slow.get, slow, 5))
print("successful unready", pcall(function() local p3 = P.Pool(1) local r = p3:apply_async(function() P.sleep(0.3) end, {}) local s = r:successful() p3:terminate() return s end))
local p4 = P.Pool({processes = 1, initializer = function(t) TAG = t end, initargs = {"init"}, maxtasksperchild = 1})
print("init", table.concat(p4:map(function(x) return TAG .. x end, {1, 2, 3}, 1), " "))
p4:close() p4:join()
print("bad option", pcall(P.Pool, 1, {procs = 2}))

local q = P.Queue()
local function child(x, q) q:put(x * 2) if x == 3 then error("boom " .. x) end if x == 4 then os.exit(7) end end
local ps = {}
for i = 1, 4 do ps[i] = P.Process(child, {i, q}, "p" .. i) ps[i]:start() end
for i, p in ipairs(ps) do p:join() print(p.name, p.exitcode, p:is_alive(), p.pid ~= nil) end
local got = {}
for i = 1, 4 do got[#got + 1] = q:get(5) end
table.sort(got)
print(table.concat(got, " "))
local p = P.Process(function() P.sleep(0.05) end)
print("before start", p.exitcode, p:is_alive())
p:start() p:join()
print("after", p.exitcode)
print(pcall(p.start, p))
local ok, e = pcall(function() local p2 = P.Process(function() end) p2:join() end)
print(ok, e)
print(pcall(P.Process, function() end, {}, {nme = "x"}))
