local P = parrun
local function show(v, depth)
  depth = depth or 0
  local t = type(v)
  if t == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = show(k) .. "=" .. (v[k] == v and "<self>" or show(v[k], depth + 1)) end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif t == "string" then return string.format("%q", v):gsub("\n", "n")
  elseif t == "number" then return math.type(v) .. ":" .. string.format("%.17g", v)
  else return tostring(v) end
end
local values = {
  {"nan", 0/0}, {"inf", math.huge}, {"-inf", -math.huge}, {"-0.0", -0.0}, {"maxint", math.maxinteger},
  {"minint", math.mininteger}, {"1.0", 1.0}, {"2^53", 2^53}, {"empty", ""}, {"nul", "a\0b"}, {"badutf8", "\xff\xfe"},
  {"holes", {1, nil, 3}}, {"mixed", {1, 2, x = "y", [10] = 10}}, {"floatkey", {[1.5] = "f", [2.0] = "two"}},
  {"boolkey", {[true] = 1}}, {"nested", {{{}}}}, {"emptytable", {}},
}
local q = P.Queue()
local pool = P.Pool(1)
local function id(x) return x end
for _, pair in ipairs(values) do
  local name, v = pair[1], pair[2]
  q:put(v)
  local viaq = q:get()
  local ok, viatask = pcall(pool.apply, pool, id, {v})
  print(name, show(v), show(viaq), ok and show(viatask) or viatask)
end
-- Process args
local pq = P.Queue()
local pr = P.Process(function(a, b, c, d) pq:put(show(a) .. " " .. show(b) .. " " .. show(c) .. " " .. show(d)) end, {0/0, -0.0, "a\0b", {1, nil, 3}})
pr:start() pr:join()
print("process", pq:get(5))
-- nil in args and results
print("nil arg", show(pool:apply(function(a, b, c) return select("#", a, b, c), a, b, c end, {nil, 2, nil})))
print("nil results", show({pool:apply(function() return nil, 1, nil end, {})}))
print("multi results", show({pool:apply(function() return 1, 2 end, {})}))
print("map nil", show(pool:map(function(x) return nil end, {1, 2, 3})))
q:put(nil) print("queue nil", show(q:get(1)))
-- cyclic
local t = {} t.self = t
print("cyclic queue", pcall(q.put, q, t))
print("cyclic task", pcall(pool.apply, pool, id, {t}))
-- deep
local d = {} local cur = d for i = 1, 1000 do cur.x = {} cur = cur.x end
print("deep queue", pcall(q.put, q, d))
print("deep task", pcall(pool.apply, pool, id, {d}))
local d2 = {} cur = d2 for i = 1, 100 do cur.x = {} cur = cur.x end
print("depth100 ok", (pcall(pool.apply, pool, id, {d2})))
-- functions, coroutines
print("function", pcall(q.put, q, {f = print}))
print("coroutine", pcall(q.put, q, coroutine.create(function() end)))
print("task returns function", pcall(pool.apply, pool, function() return function() end end, {}))
print("huge string", #pool:apply(function(n) return string.rep("x", n) end, {5 * 1024 * 1024}))
