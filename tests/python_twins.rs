//! Small real programs, each written in Lua and in Rhai beside its Python twin (the program
//! Python users port), run in every execution model: each prints what its twin prints under
//! CPython 3.11, compared word by word (brackets, commas and quotes aside, as the languages
//! print lists differently). The Python twin is quoted above each test.

mod common;

use common::{both_in_modes, Output, MODES};

/// The words of each line, without the punctuation that differs between the languages' lists.
fn words(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            l.replace(['[', ']', ',', '\'', '"', '(', ')', '|'], " ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Runs the program in both languages and every mode; each must print `python` (CPython's
/// output, `True`/`False` as the scripts print them).
fn prints_as_python(name: &str, lua: &str, rhai: &str, python: &[&str]) {
    both_in_modes(&MODES, name, lua, rhai, |mode, out: &Output| {
        out.assert_success();
        assert_eq!(words(&out.stdout), python, "{mode}: {}", out.describe());
    });
}

/// A pool pipeline with `callback` and `error_callback` (`apply_async`, `map_async`) whose
/// failing tasks raise data: the callbacks see the values and the errors' data, and after
/// `close(); join()` every result is ready, with `successful()` as Python's.
/// ```python
/// import multiprocessing as mp
/// def work(x):
///     if x % 4 == 3:
///         raise ValueError(f"bad {x}")
///     return x * 10
/// if __name__ == "__main__":
///     oks, errs = [], []
///     with mp.Pool(2) as p:
///         rs = [p.apply_async(work, (i,), callback=oks.append, error_callback=lambda e: errs.append(str(e))) for i in range(8)]
///         m = p.map_async(work, [0, 1, 2], callback=lambda v: oks.append(sum(v)))
///         bad = p.map_async(work, [1, 3, 5], error_callback=lambda e: errs.append("map " + str(e)))
///         p.close(); p.join()
///         print("oks", sorted(oks))
///         print("errs", sorted(errs))
///         print("successful", [r.successful() for r in rs], m.successful(), bad.successful())
///         print("ready", all(r.ready() for r in rs))
/// ```
#[test]
fn pipeline_prints_as_python() {
    let lua = r#"
local function work(x)
  if x % 4 == 3 then error({msg = "bad " .. x}) end
  return x * 10
end
local oks, errs = {}, {}
local p = parrun.Pool(2)
local rs = {}
for i = 0, 7 do
  rs[#rs + 1] = p:apply_async(work, {i}, function(v) oks[#oks + 1] = v end,
    function(e) errs[#errs + 1] = e.msg end)
end
local m = p:map_async(work, {0, 1, 2}, nil, function(v) local s = 0 for _, x in ipairs(v) do s = s + x end oks[#oks + 1] = s end)
local bad = p:map_async(work, {1, 3, 5}, nil, nil, function(e) errs[#errs + 1] = "map " .. e.msg end)
p:close() p:join()
table.sort(oks) table.sort(errs)
print("oks", table.concat(oks, " "))
print("errs", table.concat(errs, " | "))
local s = {}
for _, r in ipairs(rs) do s[#s + 1] = tostring(r:successful()) end
print("successful", table.concat(s, " "), m:successful(), bad:successful())
local all = true
for _, r in ipairs(rs) do all = all and r:ready() end
print("ready", all)
"#;
    let rhai = r#"
fn work(x) {
  if x % 4 == 3 { throw #{msg: `bad ${x}`}; }
  x * 10
}
let oks = [];
let errs = [];
let p = Pool(2);
let rs = [];
let ok_cb = |v| oks.push(v);
let err_cb = |e| errs.push(e.msg);
for i in 0..8 { rs.push(p.apply_async(work, [i], ok_cb, err_cb)); }
let m = p.map_async(work, [0, 1, 2], (), |v| oks.push(v.reduce(|s, x| s + x, 0)));
let bad = p.map_async(work, [1, 3, 5], (), (), |e| errs.push("map " + e.msg));
p.close(); p.join();
oks.sort(); errs.sort();
print(`oks ${oks}`);
print(`errs ${errs}`);
print(`successful ${rs.map(|r| r.successful())} ${m.successful()} ${bad.successful()}`);
print(`ready ${rs.all(|r| r.ready())}`);
"#;
    prints_as_python(
        "pipeline",
        lua,
        rhai,
        &[
            "oks 0 10 20 30 40 50 60",
            "errs bad 3 bad 7 map bad 3",
            "successful true true true false true true true false true false",
            "ready true",
        ],
    );
}

/// Threads adding to a counter under a lock, threads each running a pool of their own,
/// and consumer processes that stop at a sentinel, with their exit codes.
/// ```python
/// import threading, multiprocessing as mp
/// counter = 0
/// lock = threading.Lock()
/// def add(n):
///     global counter
///     for _ in range(n):
///         with lock:
///             counter += 1
/// def nested(results, k):
///     with mp.Pool(2) as p:
///         results.put((k, sum(p.map(pow2, range(k)))))
/// def pow2(x): return x * x
/// if __name__ == "__main__":
///     ts = [threading.Thread(target=add, args=(1000,)) for _ in range(4)]
///     for t in ts: t.start()
///     for t in ts: t.join()
///     print("counter", counter, lock.locked())
///     q = mp.Queue()
///     ts = [threading.Thread(target=nested, args=(q, k)) for k in (5, 10)]
///     for t in ts: t.start()
///     for t in ts: t.join()
///     print("nested", sorted(q.get() for _ in ts))
///     # producer/consumer with sentinels, processes
///     jobs, out = mp.Queue(), mp.Queue()
///     def consumer(jobs, out):
///         total = 0
///         while True:
///             x = jobs.get()
///             if x is None: break
///             total += x
///         out.put(total)
///     cs = [mp.Process(target=consumer, args=(jobs, out)) for _ in range(3)]
///     for c in cs: c.start()
///     for i in range(1, 101): jobs.put(i)
///     for c in cs: jobs.put(None)
///     print("consumers", sum(out.get() for _ in cs))
///     for c in cs: c.join()
///     print("exitcodes", [c.exitcode for c in cs])
/// ```
#[test]
fn shared_prints_as_python() {
    let lua = r#"
local counter = {n = 0}
local lock = parrun.Lock()
local function add(n)
  for _ = 1, n do
    lock:with(function() counter.n = counter.n + 1 end)
  end
end
local ts = {}
for i = 1, 4 do ts[i] = parrun.Thread(add, {1000}) ts[i]:start() end
for _, t in ipairs(ts) do t:join() end
print("counter", counter.n, lock:locked())
local function pow2(x) return x * x end
local function nested(results, k)
  local p = parrun.Pool(2)
  local xs = {}
  for i = 0, k - 1 do xs[#xs + 1] = i end
  local s = 0
  for _, v in ipairs(p:map(pow2, xs)) do s = s + v end
  p:close() p:join()
  results:put({k, s})
end
local q = parrun.Queue()
ts = {}
for i, k in ipairs({5, 10}) do ts[i] = parrun.Thread(nested, {q, k}) ts[i]:start() end
for _, t in ipairs(ts) do t:join() end
local got = {q:get(), q:get()}
table.sort(got, function(a, b) return a[1] < b[1] end)
print("nested", got[1][1], got[1][2], got[2][1], got[2][2])
local jobs, out = parrun.Queue(), parrun.Queue()
local function consumer(jobs, out)
  local total = 0
  while true do
    local x = jobs:get()
    if x == false then break end
    total = total + x
  end
  out:put(total)
end
local cs = {}
for i = 1, 3 do cs[i] = parrun.Process(consumer, {jobs, out}) cs[i]:start() end
for i = 1, 100 do jobs:put(i) end
for _ in ipairs(cs) do jobs:put(false) end
print("consumers", out:get() + out:get() + out:get())
local codes = {}
for i, c in ipairs(cs) do c:join() codes[i] = c.exitcode end
print("exitcodes", table.concat(codes, " "))
"#;
    let rhai = r#"
let counter = [0];
let lock = Lock();
let add = |n| { for i in 0..n { with lock { counter[0] += 1; } } };
let ts = [];
for i in 0..4 { let t = Thread(add, [1000]); t.start(); ts.push(t); }
for t in ts { t.join(); }
print(`counter ${counter[0]} ${lock.locked()}`);
fn pow2(x) { x * x }
fn nested(results, k) {
  let p = Pool(2);
  let s = p.map(pow2, 0..k).reduce(|a, b| a + b, 0);
  p.close(); p.join();
  results.put([k, s]);
}
let q = Queue();
let ts = [];
for k in [5, 10] { let t = Thread(nested, [q, k]); t.start(); ts.push(t); }
for t in ts { t.join(); }
let got = [q.get(), q.get()];
got.sort(|a, b| a[0] - b[0]);
print(`nested ${got}`);
fn consumer(jobs, out) {
  let total = 0;
  loop { let x = jobs.get(); if x == false { break; } total += x; }
  out.put(total);
}
let jobs = Queue(); let out = Queue();
let cs = [];
for i in 0..3 { let c = Process(consumer, [jobs, out]); c.start(); cs.push(c); }
for i in 1..=100 { jobs.put(i); }
for c in cs { jobs.put(false); }
print(`consumers ${out.get() + out.get() + out.get()}`);
let codes = [];
for c in cs { c.join(); codes.push(c.exitcode); }
print(`exitcodes ${codes}`);
"#;
    prints_as_python(
        "shared",
        lua,
        rhai,
        &[
            "counter 4000 false",
            "nested 5 30 10 285",
            "consumers 5050",
            "exitcodes 0 0 0",
        ],
    );
}

/// An `imap` whose item raises goes on with the next item, a `get` that times out leaves the
/// result to a later `get`, then `imap_unordered` with a chunksize and a `starmap`.
/// ```python
/// import multiprocessing as mp, time
/// def slow(x):
///     time.sleep(0.2 if x == 0 else 0)
///     if x == 2: raise KeyError(x)
///     return x + 100
/// if __name__ == "__main__":
///     with mp.Pool(2) as p:
///         it = p.imap(slow, range(5))
///         out = []
///         while True:
///             try: out.append(next(it))
///             except StopIteration: break
///             except KeyError as e: out.append("err %s" % e)
///         print("imap", out)
///         r = p.apply_async(slow, (0,))
///         try: r.get(0.01)
///         except mp.TimeoutError: print("timeout", r.ready())
///         print("later", r.get(5))
///         print("unordered", sorted(x for x in p.imap_unordered(slow, [1, 3, 4], 2)))
///         print("starmap", p.starmap(pow, [(2, 3), (3, 2)]))
/// ```
#[test]
fn imap_prints_as_python() {
    let lua = r#"
local function slow(x)
  parrun.sleep(x == 0 and 0.2 or 0)
  if x == 2 then error({key = x}) end
  return x + 100
end
local p = parrun.Pool(2)
local it = p:imap(slow, {0, 1, 2, 3, 4})
local out = {}
while true do
  local ok, v = pcall(it.next, it)
  if ok and v == nil then break end
  out[#out + 1] = ok and tostring(v) or ("err " .. v.key)
end
print("imap", table.concat(out, " "))
local r = p:apply_async(slow, {0})
local ok, e = pcall(r.get, r, 0.01)
if not ok and e:find("TimeoutError") then print("timeout", r:ready()) end
print("later", r:get(5))
local u = {}
for x in p:imap_unordered(slow, {1, 3, 4}, 2) do u[#u + 1] = x end
table.sort(u)
print("unordered", table.concat(u, " "))
local s = p:starmap(function(a, b) return math.floor(a ^ b) end, {{2, 3}, {3, 2}})
print("starmap", table.concat(s, " "))
p:close() p:join()
"#;
    let rhai = r#"
fn slow(x) {
  sleep(if x == 0 { 0.2 } else { 0 });
  if x == 2 { throw #{key: x}; }
  x + 100
}
let p = Pool(2);
let it = p.imap(slow, 0..5);
let out = [];
loop {
  try {
    let v = it.next();
    if v == () { break; }
    out.push(v.to_string());
  } catch (e) { out.push(`err ${e.key}`); }
}
print(`imap ${out}`);
let r = p.apply_async(slow, [0]);
try { r.get(0.01); } catch (e) { if e.contains("TimeoutError") { print(`timeout ${r.ready()}`); } }
print(`later ${r.get(5)}`);
let u = [];
for x in p.imap_unordered(slow, [1, 3, 4], 2) { u.push(x); }
u.sort();
print(`unordered ${u}`);
print(`starmap ${p.starmap(|a, b| a ** b, [[2, 3], [3, 2]])}`);
p.close(); p.join();
"#;
    prints_as_python(
        "imap",
        lua,
        rhai,
        &[
            "imap 100 101 err 2 103 104",
            "timeout false",
            "later 100",
            "unordered 101 103 104",
            "starmap 8 9",
        ],
    );
}

/// The `multiprocessing` documentation's "Using a pool of workers", as its readers port it:
/// parrun's own functions as tasks (Python's `os.getpid`, `time.sleep`), a `get` that times out
/// on a sleeping worker, and the pool ended with `terminate` as its `with` block does (the
/// timeouts shortened).
/// ```python
/// from multiprocessing import Pool, TimeoutError
/// import time, os
/// def f(x):
///     return x*x
/// if __name__ == '__main__':
///     with Pool(processes=4) as pool:
///         print(pool.map(f, range(10)))
///         print(sorted(pool.imap_unordered(f, range(10))))
///         res = pool.apply_async(f, (20,))
///         print(res.get(timeout=1))
///         res = pool.apply_async(os.getpid, ())
///         print(res.get(timeout=1) != os.getpid())
///         res = pool.apply_async(time.sleep, (10,))
///         try:
///             print(res.get(timeout=0.2))
///         except TimeoutError:
///             print("We lacked patience and got a multiprocessing.TimeoutError")
///         print("For the moment, the pool remains available for more work")
///     print("Now the pool is closed and no longer available")
/// ```
#[test]
fn the_docs_pool_of_workers_prints_as_python() {
    let lua = r#"
local function f(x) return x * x end
local pool = parrun.Pool(4)
local xs = {} for i = 0, 9 do xs[#xs + 1] = i end
print(table.concat(pool:map(f, xs), ", "))
local u = {} for x in pool:imap_unordered(f, xs) do u[#u + 1] = x end
table.sort(u)
print(table.concat(u, ", "))
local res = pool:apply_async(f, {20})
print(res:get(1))
res = pool:apply_async(parrun.getpid, {})
local pid = res:get(1)
print(parrun.mode() == "fork" and pid ~= parrun.getpid() or pid == parrun.getpid())
res = pool:apply_async(parrun.sleep, {10})
local ok, e = pcall(res.get, res, 0.2)
if not ok and tostring(e):find("TimeoutError") then
  print("We lacked patience and got a multiprocessing.TimeoutError")
end
print("For the moment, the pool remains available for more work")
pool:terminate()
print("Now the pool is closed and no longer available")
"#;
    let rhai = r#"
fn f(x) { x * x }
let pool = Pool(4);
print(pool.map(f, 0..10));
let u = []; for x in pool.imap_unordered(f, 0..10) { u.push(x); }
u.sort();
print(u);
let res = pool.apply_async(f, [20]);
print(res.get(1));
res = pool.apply_async(Fn("getpid"), []);
let pid = res.get(1);
print(if mode() == "fork" { pid != getpid() } else { pid == getpid() });
res = pool.apply_async(Fn("sleep"), [10]);
try { print(res.get(0.2)); } catch (e) {
  if e.contains("TimeoutError") { print("We lacked patience and got a multiprocessing.TimeoutError"); }
}
print("For the moment, the pool remains available for more work");
pool.terminate();
print("Now the pool is closed and no longer available");
"#;
    let squares = "0 1 4 9 16 25 36 49 64 81";
    prints_as_python(
        "docs_pool",
        lua,
        rhai,
        &[
            squares,
            squares,
            "400",
            "true",
            "We lacked patience and got a multiprocessing.TimeoutError",
            "For the moment the pool remains available for more work",
            "Now the pool is closed and no longer available",
        ],
    );
}

/// Consumers woken by a `Condition` (`wait_for`) as a producer fills a list, then workers
/// gated by an `Event` and let in two at a time by a `Semaphore`, their peak measured by a
/// counter under a lock.
/// ```python
/// import threading, time
/// # producer/consumer with a Condition
/// cond = threading.Condition()
/// items, consumed = [], []
/// def consumer():
///     while True:
///         with cond:
///             cond.wait_for(lambda: len(items) > 0)
///             x = items.pop(0)
///         if x is None:
///             break
///         consumed.append(x * x)
/// cs = [threading.Thread(target=consumer) for _ in range(2)]
/// for c in cs: c.start()
/// for i in range(1, 11):
///     with cond:
///         items.append(i)
///         cond.notify()
/// for _ in cs:
///     with cond:
///         items.append(None)
///         cond.notify()
/// for c in cs: c.join()
/// print("consumed", sum(consumed), len(consumed))
/// # workers gated by an Event, at most 2 at once by a Semaphore, measured by a counter
/// go = threading.Event()
/// sem = threading.Semaphore(2)
/// lock = threading.Lock()
/// state = {"now": 0, "peak": 0, "done": 0}
/// def worker():
///     go.wait()
///     with sem:
///         with lock:
///             state["now"] += 1
///             state["peak"] = max(state["peak"], state["now"])
///         time.sleep(0.02)
///         with lock:
///             state["now"] -= 1
///             state["done"] += 1
/// ws = [threading.Thread(target=worker) for _ in range(6)]
/// for w in ws: w.start()
/// time.sleep(0.05)
/// print("before go", state["done"])
/// go.set()
/// for w in ws: w.join()
/// print("after go", state["done"], "peak", state["peak"])
/// ```
#[test]
fn sync_objects_print_as_python() {
    let lua = r#"
-- producer/consumer with a Condition
local cond = parrun.Condition()
local items, consumed = {}, {}
local function consumer()
  while true do
    local x
    cond:with(function()
      cond:wait_for(function() return #items > 0 end)
      x = table.remove(items, 1)
    end)
    if x == false then break end
    consumed[#consumed + 1] = x * x
  end
end
local cs = {}
for i = 1, 2 do cs[i] = parrun.Thread(consumer) cs[i]:start() end
for i = 1, 10 do
  cond:with(function() items[#items + 1] = i cond:notify() end)
end
for _ in ipairs(cs) do
  cond:with(function() items[#items + 1] = false cond:notify() end)
end
for _, c in ipairs(cs) do c:join() end
local sum = 0
for _, v in ipairs(consumed) do sum = sum + v end
print("consumed", sum, #consumed)
-- workers gated by an Event, at most 2 at once by a Semaphore, measured by a counter
local go, sem, lock = parrun.Event(), parrun.Semaphore(2), parrun.Lock()
local state = {now = 0, peak = 0, done = 0}
local function worker()
  go:wait()
  sem:with(function()
    lock:with(function()
      state.now = state.now + 1
      state.peak = math.max(state.peak, state.now)
    end)
    parrun.sleep(0.02)
    lock:with(function()
      state.now = state.now - 1
      state.done = state.done + 1
    end)
  end)
end
local ws = {}
for i = 1, 6 do ws[i] = parrun.Thread(worker) ws[i]:start() end
parrun.sleep(0.05)
print("before go", state.done)
go:set()
for _, w in ipairs(ws) do w:join() end
print("after go", state.done, "peak", state.peak)
"#;
    let rhai = r#"
// producer/consumer with a Condition
let cond = Condition();
let items = [];
let consumed = [];
let consumer = || {
  loop {
    let x = ();
    with cond {
      cond.wait_for(|| items.len() > 0);
      x = items.remove(0);
    }
    if x == false { break; }
    consumed.push(x * x);
  }
};
let cs = [];
for i in 0..2 { let c = Thread(consumer); c.start(); cs.push(c); }
for i in 1..=10 {
  with cond { items.push(i); cond.notify(); }
}
for c in cs {
  with cond { items.push(false); cond.notify(); }
}
for c in cs { c.join(); }
print(`consumed ${consumed.reduce(|s, v| s + v, 0)} ${consumed.len()}`);
// workers gated by an Event, at most 2 at once by a Semaphore, measured by a counter
let start_gate = Event(); let sem = Semaphore(2); let lock = Lock();
let state = #{now: 0, peak: 0, done: 0};
let worker = || {
  start_gate.wait();
  with sem {
    with lock {
      state.now += 1;
      if state.now > state.peak { state.peak = state.now; }
    }
    sleep(0.02);
    with lock {
      state.now -= 1;
      state.done += 1;
    }
  }
};
let ws = [];
for i in 0..6 { let w = Thread(worker); w.start(); ws.push(w); }
sleep(0.05);
print(`before go ${state.done}`);
start_gate.set();
for w in ws { w.join(); }
print(`after go ${state.done} peak ${state.peak}`);
"#;
    prints_as_python(
        "syncobjects",
        lua,
        rhai,
        &["consumed 385 10", "before go 0", "after go 6 peak 2"],
    );
}

/// Where code runs, by the names Python gives: `current_process()` and `current_thread()` in
/// the script, a thread, a process (unnamed and named) and a thread of that process, the same
/// objects on every call (a name given to them stays), and a process's pid as `getpid()` in it.
/// ```python
/// import multiprocessing as mp, threading, os
/// def show(tag):
///     print(tag, mp.current_process().name, threading.current_thread().name)
/// def child():
///     show("child")
///     t = threading.Thread(target=show, args=("child-thread",), name="helper")
///     t.start(); t.join()
///     print("child-pid", mp.current_process().pid == os.getpid())
/// if __name__ == "__main__":
///     show("main")
///     me = threading.current_thread()
///     print("me", me.is_alive(), me.ident == threading.get_ident(), mp.current_process().pid == os.getpid(), mp.current_process().daemon)
///     t = threading.Thread(target=show, args=("thread",)); t.start(); t.join()
///     p = mp.Process(target=child); p.start(); p.join()
///     q = mp.Process(target=child, name="named"); q.start(); q.join()
///     threading.current_thread().name = "Boss"
///     mp.current_process().name = "Top"
///     show("renamed")
///     print(mp.Process(target=show).name)
/// ```
#[test]
fn current_process_and_thread_print_as_python() {
    let lua = r#"
function show(tag)
  print(tag, parrun.current_process().name, parrun.current_thread().name)
end
function child()
  show("child")
  local t = parrun.Thread(show, {"child-thread"}, "helper")
  t:start() t:join()
  print("child-pid", parrun.current_process().pid == parrun.getpid())
end
show("main")
local me = parrun.current_thread()
print("me", me:is_alive(), me.ident == parrun.get_ident(), parrun.current_process().pid == parrun.getpid(), parrun.current_process().daemon)
local t = parrun.Thread(show, {"thread"}) t:start() t:join()
local p = parrun.Process(child) p:start() p:join()
local q = parrun.Process(child, {}, "named") q:start() q:join()
parrun.current_thread().name = "Boss"
parrun.current_process().name = "Top"
show("renamed")
print(parrun.Process(show).name)
"#;
    let rhai = r#"
fn show(tag) {
  print(`${tag} ${current_process().name} ${current_thread().name}`);
}
fn child() {
  show("child");
  let t = Thread(show, ["child-thread"], "helper");
  t.start(); t.join();
  print(`child-pid ${current_process().pid == getpid()}`);
}
show("main");
let me = current_thread();
print(`me ${me.is_alive()} ${me.ident == get_ident()} ${current_process().pid == getpid()} ${current_process().daemon}`);
let t = Thread(show, ["thread"]); t.start(); t.join();
let p = Process(child); p.start(); p.join();
let q = Process(child, [], "named"); q.start(); q.join();
me.name = "Boss";
let cp = current_process();
cp.name = "Top";
show("renamed");
print(Process(show).name);
"#;
    prints_as_python(
        "current",
        lua,
        rhai,
        &[
            "main MainProcess MainThread",
            "me true true true false",
            "thread MainProcess Thread-1 show",
            "child Process-1 MainThread",
            "child-thread Process-1 helper",
            "child-pid true",
            "child named MainThread",
            "child-thread named helper",
            "child-pid true",
            "renamed Top Boss",
            "Process-3",
        ],
    );
}

/// `threading.main_thread()`, `enumerate()` and `active_count()`: the script's main thread and
/// the threads it started while they run, in the order started, from the main thread and from
/// another; in a process, its own main thread and threads only.
/// ```python
/// import threading, multiprocessing as mp
/// def names(): return " ".join(t.name for t in threading.enumerate())
/// def work(e): e.wait()
/// def show(tag):
///     print(tag, threading.active_count(), names(), threading.main_thread().name,
///           threading.main_thread() is threading.current_thread())
/// def child():
///     show("child")
///     ce = threading.Event()
///     ct = threading.Thread(target=work, args=(ce,), name="helper"); ct.start()
///     show("child2")
///     ce.set(); ct.join()
/// if __name__ == "__main__":
///     e = threading.Event()
///     show("start")
///     ts = [threading.Thread(target=work, args=(e,)) for _ in range(3)]
///     for t in ts: t.start()
///     show("three")
///     t = threading.Thread(target=show, args=("inthread",)); t.start(); t.join()
///     p = mp.Process(target=child); p.start(); p.join()
///     e.set()
///     for t in ts: t.join()
///     show("end")
///     print(threading.main_thread().ident == threading.get_ident())
/// ```
#[test]
fn enumerate_and_main_thread_print_as_python() {
    let lua = r#"
function names()
  local out = {}
  for i, t in ipairs(parrun.enumerate()) do out[i] = t.name end
  return table.concat(out, " ")
end
function work(e) e:wait() end
function show(tag)
  print(tag, parrun.active_count(), names(), parrun.main_thread().name,
    parrun.main_thread() == parrun.current_thread())
end
function child()
  show("child")
  local ce = parrun.Event()
  local ct = parrun.Thread(work, {ce}, "helper") ct:start()
  show("child2")
  ce:set() ct:join()
end
local e = parrun.Event()
show("start")
local ts = {}
for i = 1, 3 do ts[i] = parrun.Thread(work, {e}) ts[i]:start() end
show("three")
local t = parrun.Thread(show, {"inthread"}) t:start() t:join()
local p = parrun.Process(child) p:start() p:join()
e:set()
for i = 1, 3 do ts[i]:join() end
show("end")
print(parrun.main_thread().ident == parrun.get_ident())
"#;
    let rhai = r#"
fn names() { let s = ""; for t in enumerate() { s += " " + t.name; } s }
fn work(e) { e.wait(); }
fn show(tag) {
  print(`${tag} ${active_count()} ${names()} ${main_thread().name} ${main_thread() == current_thread()}`);
}
fn child() {
  show("child");
  let ce = Event();
  let ct = Thread(work, [ce], "helper"); ct.start();
  show("child2");
  ce.set(); ct.join();
}
let e = Event();
show("start");
let ts = [];
for i in 0..3 { let t = Thread(work, [e]); t.start(); ts.push(t); }
show("three");
let t = Thread(show, ["inthread"]); t.start(); t.join();
let p = Process(child); p.start(); p.join();
e.set();
for t in ts { t.join(); }
show("end");
print(main_thread().ident == get_ident());
"#;
    prints_as_python(
        "enumerate",
        lua,
        rhai,
        &[
            "start 1 MainThread MainThread true",
            "three 4 MainThread Thread-1 work Thread-2 work Thread-3 work MainThread true",
            "inthread 5 MainThread Thread-1 work Thread-2 work Thread-3 work Thread-4 show \
             MainThread false",
            "child 1 MainThread MainThread true",
            "child2 2 MainThread helper MainThread true",
            "end 1 MainThread MainThread true",
            "true",
        ],
    );
}

/// `multiprocessing.active_children()`: the processes the calling process started that are
/// alive, the same objects; none in a child that started none.
/// ```python
/// import multiprocessing as mp
/// def hold(e): e.wait()
/// def quick(): pass
/// def inner(): print("inner", len(mp.active_children()))
/// if __name__ == "__main__":
///     e = mp.Event()
///     print("none", len(mp.active_children()))
///     a = mp.Process(target=hold, args=(e,)); a.start()
///     b = mp.Process(target=quick, name="quick"); b.start(); b.join()
///     print("alive", " ".join(p.name for p in mp.active_children()))
///     print("same", mp.active_children()[0] is a)
///     c = mp.Process(target=inner); c.start(); c.join()
///     e.set(); a.join()
///     print("after", len(mp.active_children()), a.exitcode)
/// ```
#[test]
fn active_children_prints_as_python() {
    let lua = r#"
function hold(e) e:wait() end
function quick() end
function inner() print("inner", #parrun.active_children()) end
local e = parrun.Event()
print("none", #parrun.active_children())
local a = parrun.Process(hold, {e}) a:start()
local b = parrun.Process(quick, {}, "quick") b:start() b:join()
local names = {}
for i, p in ipairs(parrun.active_children()) do names[i] = p.name end
print("alive", table.concat(names, " "))
print("same", parrun.active_children()[1] == a)
local c = parrun.Process(inner) c:start() c:join()
e:set() a:join()
print("after", #parrun.active_children(), a.exitcode)
"#;
    let rhai = r#"
fn hold(e) { e.wait(); }
fn quick() { }
fn inner() { print(`inner ${active_children().len()}`); }
let e = Event();
print(`none ${active_children().len()}`);
let a = Process(hold, [e]); a.start();
let b = Process(quick, [], "quick"); b.start(); b.join();
let names = "";
for p in active_children() { names += " " + p.name; }
print(`alive ${names}`);
print(`same ${active_children()[0] == a}`);
let c = Process(inner); c.start(); c.join();
e.set(); a.join();
print(`after ${active_children().len()} ${a.exitcode}`);
"#;
    prints_as_python(
        "children",
        lua,
        rhai,
        &[
            "none 0",
            "alive Process-1",
            "same true",
            "inner 0",
            "after 0 0",
        ],
    );
}
