//! `RLock`, `Event`, `Semaphore`, `BoundedSemaphore` and `Condition`, as Python's `threading`
//! and `multiprocessing` have them, in both languages and every execution model: within a
//! process (threads), and from forked children and pool workers, which reach the parent's
//! object through their link. Each run has the suite's time limit (`common::TIMEOUT`).

mod common;

use common::{both_in_modes, run_code, MODES};

/// What each object does within one process, as the Python below prints it (an error's line
/// is parrun's wording: the operation, Python's message, then Python's exception type).
/// ```python
/// import threading
/// r = threading.RLock()
/// print("rlock", r.acquire(), r.acquire(), r.acquire(False), r.acquire(True, 0.01))
/// for _ in range(4): r.release()
/// try: r.release()
/// except RuntimeError as e: print("rlock release", e)
/// def other():
///     print("other acquire", r.acquire(True, 0.05))
/// r.acquire()
/// t = threading.Thread(target=other); t.start(); t.join()
/// r.release()
/// e = threading.Event()
/// print("event", e.is_set(), e.wait(0.05))
/// t = threading.Thread(target=lambda: (threading.Event().wait(0.1), e.set())); t.start()
/// print("event wait", e.wait(5), e.is_set())
/// t.join(); e.clear(); print("event cleared", e.is_set(), e.wait(0))
/// s = threading.BoundedSemaphore(2)
/// print("sem", s.acquire(), s.acquire(), s.acquire(False), s.acquire(True, 0.05))
/// s.release(2)
/// try: s.release()
/// except ValueError as e: print("sem release", e)
/// s2 = threading.Semaphore(0)
/// s2.release(3)
/// print("open sem", s2.acquire(False), s2.acquire(False), s2.acquire(False), s2.acquire(False))
/// try: threading.Semaphore(-1)
/// except ValueError as e: print("sem init", e)
/// c = threading.Condition()
/// try: c.wait()
/// except RuntimeError as e: print("cond wait", e)
/// try: c.notify()
/// except RuntimeError as e: print("cond notify", e)
/// with c: print("cond timeout", c.wait(0.05))
/// ```
#[test]
fn each_object_behaves_as_pythons_within_a_process() {
    let lua = r#"
local r = parrun.RLock()
print("rlock", r:acquire(), r:acquire(), r:acquire(false), r:acquire(true, 0.01))
for _ = 1, 4 do r:release() end
print("rlock release", select(2, pcall(r.release, r)))
r:acquire()
local t = parrun.Thread(function() print("other acquire", r:acquire(true, 0.05)) end)
t:start() t:join()
r:release()
local e = parrun.Event()
print("event", e:is_set(), e:wait(0.05))
t = parrun.Thread(function() parrun.sleep(0.1) e:set() end) t:start()
print("event wait", e:wait(5), e:is_set())
t:join() e:clear() print("event cleared", e:is_set(), e:wait(0))
local s = parrun.BoundedSemaphore(2)
print("sem", s:acquire(), s:acquire(), s:acquire(false), s:acquire(true, 0.05))
s:release(2)
print("sem release", select(2, pcall(s.release, s)))
local s2 = parrun.Semaphore(0)
s2:release(3)
print("open sem", s2:acquire(false), s2:acquire(false), s2:acquire(false), s2:acquire(false))
print("sem init", select(2, pcall(parrun.Semaphore, -1)))
local c = parrun.Condition()
print("cond wait", select(2, pcall(c.wait, c)))
print("cond notify", select(2, pcall(c.notify, c)))
c:with(function() print("cond timeout", c:wait(0.05)) end)
"#;
    let rhai = r#"
let r = RLock();
print(`rlock ${r.acquire()} ${r.acquire()} ${r.acquire(false)} ${r.acquire(true, 0.01)}`);
for i in 0..4 { r.release(); }
try { r.release(); } catch (err) { print(`rlock release ${err}`); }
r.acquire();
let t = Thread(|r| print(`other acquire ${r.acquire(true, 0.05)}`), [r]);
t.start(); t.join();
r.release();
let e = Event();
print(`event ${e.is_set()} ${e.wait(0.05)}`);
t = Thread(|e| { sleep(0.1); e.set(); }, [e]); t.start();
print(`event wait ${e.wait(5)} ${e.is_set()}`);
t.join(); e.clear(); print(`event cleared ${e.is_set()} ${e.wait(0)}`);
let s = BoundedSemaphore(2);
print(`sem ${s.acquire()} ${s.acquire()} ${s.acquire(false)} ${s.acquire(true, 0.05)}`);
s.release(2);
try { s.release(); } catch (err) { print(`sem release ${err}`); }
let s2 = Semaphore(0);
s2.release(3);
print(`open sem ${s2.acquire(false)} ${s2.acquire(false)} ${s2.acquire(false)} ${s2.acquire(false)}`);
try { Semaphore(-1); } catch (err) { print(`sem init ${err}`); }
let c = Condition();
try { c.wait(); } catch (err) { print(`cond wait ${err}`); }
try { c.notify(); } catch (err) { print(`cond notify ${err}`); }
with c { print(`cond timeout ${c.wait(0.05)}`); }
"#;
    let python = [
        "rlock true true true true",
        "rlock release * cannot release un-acquired lock (RuntimeError)",
        "other acquire false",
        "event false false",
        "event wait true true",
        "event cleared false false",
        "sem true true false false",
        "sem release * Semaphore released too many times (ValueError)",
        "open sem true true true false",
        "sem init * semaphore initial value must be >= 0 (ValueError)",
        "cond wait * cannot wait on un-acquired lock (RuntimeError)",
        "cond notify * cannot notify on un-acquired lock (RuntimeError)",
        "cond timeout false",
    ];
    both_in_modes(&MODES, "syncobjects", lua, rhai, |mode, out| {
        out.assert_success();
        let lines: Vec<String> = out
            .stdout_lines()
            .iter()
            .map(|l| l.replace('\t', " "))
            .collect();
        assert_eq!(lines.len(), python.len(), "{mode}: {}", out.describe());
        for (line, want) in lines.iter().zip(python) {
            let ok = match want.split_once(" * ") {
                Some((head, tail)) => line.starts_with(head) && line.ends_with(tail),
                None => line == want,
            };
            assert!(ok, "{mode}: `{line}` is not `{want}`\n{}", out.describe());
        }
    });
}

/// Forked children (and in `gil` and `isolated`, the threads a `Process` is there) use the
/// parent's objects: an `Event` gates them, a `BoundedSemaphore(2)` lets two at a time into a
/// section (a counter in a queue measures it), an `RLock` the parent holds is not theirs to
/// release, a `Condition` wakes a child waiting in it, and a grandchild's wait is forwarded up.
/// Pool workers use the objects the script's globals hold.
#[test]
fn children_and_pool_workers_use_the_parents_objects() {
    let lua = r#"
go = parrun.Event()
sem = parrun.BoundedSemaphore(2)
local count, peak = parrun.Queue(), parrun.Queue()
count:put(0)
local r = parrun.RLock()
local function worker()
  go:wait()
  sem:with(function()
    local n = count:get() + 1 count:put(n) peak:put(n)
    parrun.sleep(0.05)
    count:put(count:get() - 1)
  end)
  r:acquire() r:acquire() r:release() r:release()
end
local ps = {}
for i = 1, 5 do ps[i] = parrun.Process(worker) ps[i]:start() end
parrun.sleep(0.1)
print("before set", peak:qsize())
go:set()
local codes = {}
for i = 1, 5 do ps[i]:join() codes[i] = ps[i].exitcode end
local max = 0
while not peak:empty() do max = math.max(max, peak:get()) end
print("peak", max, table.concat(codes, " "))
r:acquire()
local p = parrun.Process(function() print("child release", select(2, pcall(r.release, r))) end)
p:start() p:join()
r:release()
p = parrun.Process(function()
  print("child non-blocking", sem:acquire(false), sem:acquire(false), sem:acquire(false), r:acquire(false))
  sem:release(2) r:release()
end)
p:start() p:join()
local cond, box = parrun.Condition(parrun.Lock()), parrun.Queue()
local waiter = function(cond, box)
  cond:acquire()
  local notified = cond:wait(10)
  cond:release()
  box:put(notified)
end
p = parrun.Process(function()
  local g = parrun.Process(waiter, {cond, box}) g:start()
  waiter(cond, box)
  g:join()
end)
p:start()
while true do
  parrun.sleep(0.05)
  cond:acquire()
  local waiting = tostring(cond)
  cond:release()
  if parrun.mode() ~= "fork" or waiting == "<Condition waiters=2>" then break end
end
parrun.sleep(0.1)
cond:acquire() cond:notify_all() cond:release()
print("notified", box:get(10), box:get(10))
p:join()
p = parrun.Process(function()
  local g = parrun.Process(function() print("grandchild", tostring(sem)) end)
  g:start() g:join()
end)
p:start() p:join()
local pool = parrun.Pool(2)
local got = pool:map(function(x) sem:acquire() sem:release() return go:wait(5) and x * 2 end, {1, 2, 3})
print("pool", table.concat(got, " "), tostring(sem))
pool:close() pool:join()
"#;
    let rhai = r#"
const GO = Event();
const SEM = BoundedSemaphore(2);
let count = Queue(); let peak = Queue();
count.put(0);
let r = RLock();
fn worker(count, peak, r) {
  global::GO.wait();
  with global::SEM {
    let n = count.get() + 1; count.put(n); peak.put(n);
    sleep(0.05);
    count.put(count.get() - 1);
  }
  r.acquire(); r.acquire(); r.release(); r.release();
}
let ps = [];
for i in 0..5 { let p = Process(worker, [count, peak, r]); p.start(); ps.push(p); }
sleep(0.1);
print(`before set ${peak.qsize()}`);
GO.set();
let codes = [];
for p in ps { p.join(); codes.push(p.exitcode); }
let max = 0;
while !peak.empty() { let n = peak.get(); if n > max { max = n; } }
print(`peak ${max} ${codes[0]} ${codes[1]} ${codes[2]} ${codes[3]} ${codes[4]}`);
r.acquire();
let p = Process(|r| { try { r.release(); } catch (err) { print(`child release ${err}`); } }, [r]);
p.start(); p.join();
r.release();
p = Process(|r| {
  print(`child non-blocking ${global::SEM.acquire(false)} ${global::SEM.acquire(false)} ${global::SEM.acquire(false)} ${r.acquire(false)}`);
  global::SEM.release(2); r.release();
}, [r]);
p.start(); p.join();
let cond = Condition(Lock()); let box = Queue();
fn waiter(cond, box) {
  cond.acquire();
  let notified = cond.wait(10);
  cond.release();
  box.put(notified);
}
p = Process(|cond, box| {
  let g = Process(waiter, [cond, box]); g.start();
  waiter(cond, box);
  g.join();
}, [cond, box]);
p.start();
loop {
  sleep(0.05);
  cond.acquire();
  let waiting = `${cond}`;
  cond.release();
  if mode() != "fork" || waiting == "<Condition waiters=2>" { break; }
}
sleep(0.1);
cond.acquire(); cond.notify_all(); cond.release();
print(`notified ${box.get(10)} ${box.get(10)}`);
p.join();
p = Process(|| {
  let g = Process(|| print(`grandchild ${global::SEM}`));
  g.start(); g.join();
});
p.start(); p.join();
let pool = Pool(2);
let got = pool.map(|x| { global::SEM.acquire(); global::SEM.release(); if global::GO.wait(5) { x * 2 } else { 0 } }, [1, 2, 3]);
print(`pool ${got[0]} ${got[1]} ${got[2]} ${SEM}`);
pool.close(); pool.join();
"#;
    both_in_modes(&MODES, "syncchildren", lua, rhai, |mode, out| {
        out.assert_success();
        let lines: Vec<String> = out
            .stdout_lines()
            .iter()
            .map(|l| l.replace('\t', " "))
            .collect();
        let release = "child release * cannot release un-acquired lock (RuntimeError)";
        let want = [
            "before set 0",
            "peak 2 0 0 0 0 0",
            release,
            "child non-blocking true true false true",
            "notified true true",
            "grandchild <BoundedSemaphore value=2/2>",
            "pool 2 4 6 <BoundedSemaphore value=2/2>",
        ];
        assert_eq!(lines.len(), want.len(), "{mode}: {}", out.describe());
        for (line, want) in lines.iter().zip(want) {
            let ok = match want.split_once(" * ") {
                Some((head, tail)) => line.starts_with(head) && line.ends_with(tail),
                None => line == want,
            };
            assert!(ok, "{mode}: `{line}` is not `{want}`\n{}", out.describe());
        }
    });
}

/// A forked child killed while it waits takes nothing: the semaphore's release, the
/// condition's notify and its lock stay for the parent; a barrier it waited at breaks, as
/// when a party gives up.
#[test]
fn a_child_killed_while_it_waits_takes_nothing() {
    let lua = r#"
local s, c, e, bar = parrun.Semaphore(0), parrun.Condition(), parrun.Event(), parrun.Barrier(3)
local a = parrun.Process(function() s:acquire() end)
local b = parrun.Process(function() c:acquire() c:wait() end)
local w = parrun.Process(function() e:wait() end)
local x = parrun.Process(function() bar:wait() end)
a:start() b:start() w:start() x:start()
parrun.sleep(0.3)
a:kill() b:kill() w:kill() x:kill() a:join() b:join() w:join() x:join()
parrun.sleep(0.2)
s:release()
print("semaphore", s:acquire(false))
print("condition", c:acquire(false), tostring(c))
print("barrier", bar.broken)
"#;
    let rhai = r#"
let s = Semaphore(0); let c = Condition(); let e = Event(); let bar = Barrier(3);
let a = Process(|s| s.acquire(), [s]);
let b = Process(|c| { c.acquire(); c.wait(); }, [c]);
let w = Process(|e| e.wait(), [e]);
let x = Process(|bar| bar.wait(), [bar]);
a.start(); b.start(); w.start(); x.start();
sleep(0.3);
a.kill(); b.kill(); w.kill(); x.kill(); a.join(); b.join(); w.join(); x.join();
sleep(0.2);
s.release();
print(`semaphore ${s.acquire(false)}`);
print(`condition ${c.acquire(false)} ${c}`);
print(`barrier ${bar.broken}`);
"#;
    both_in_modes(&["fork"], "syncdead", lua, rhai, |mode, out| {
        out.assert_success();
        let lines: Vec<String> = out
            .stdout_lines()
            .iter()
            .map(|l| l.replace('\t', " "))
            .collect();
        assert_eq!(
            lines,
            [
                "semaphore true",
                "condition true <Condition waiters=0>",
                "barrier true"
            ],
            "{mode}: {}",
            out.describe()
        );
    });
}

/// A forked child killed while its `put` waits for room on a full `Queue(1)` puts nothing,
/// and one killed while its `get` waits takes nothing: once `join` has returned, the room the
/// parent makes stays empty, as with Python's `multiprocessing.Queue`, and the values it puts
/// are there for its own `get_nowait`. (The parent's thread that waited for the child used to
/// put its value when room came within its 50 ms liveness check, and to take a value put then
/// for it, giving it back a moment later.)
/// ```python
/// ready, ghosts, missed = mp.Queue(), 0, 0
/// for _ in range(3):
///     q = mp.Queue(1); q.put("first")
///     p = mp.Process(target=lambda: (ready.put(True), q.put("ghost"))); p.start()
///     ready.get(); time.sleep(0.1); p.kill(); p.join(); q.get()
///     try: q.get(timeout=0.2); ghosts += 1
///     except queue.Empty: pass
///     q = mp.Queue()
///     ps = [mp.Process(target=lambda: (ready.put(True), q.get())) for _ in range(3)]
///     for p in ps: p.start()
///     for p in ps: ready.get()
///     time.sleep(0.06)
///     for p in ps: p.kill(); p.join()
///     for i in range(3): q.put(i)
///     time.sleep(0.05)  # Python's put reaches the pipe through a feeder thread
///     for i in range(3):
///         try: q.get_nowait()
///         except queue.Empty: missed += 1
/// print("ghosts", ghosts, "missed", missed)  # ghosts 0 missed 9
/// ```
/// Python's `get` half misses every value: a consumer killed in `get` holds the queue's reader
/// lock for ever (its documentation warns that a process killed while using a queue may break
/// it). parrun's queue stays whole, so nothing should be missed.
#[test]
fn a_child_killed_while_its_put_or_get_waits_moves_nothing() {
    let lua = r#"
local ready, ghosts, missed = parrun.Queue(), 0, 0
for _ = 1, 3 do
  local q = parrun.Queue(1)
  q:put("first")
  local p = parrun.Process(function() ready:put(true) q:put("ghost") end)
  p:start() ready:get() parrun.sleep(0.1)
  p:kill() p:join() q:get()
  if pcall(q.get, q, 0.2) then ghosts = ghosts + 1 end
  q = parrun.Queue()
  local ps = {}
  for i = 1, 3 do ps[i] = parrun.Process(function() ready:put(true) q:get() end) ps[i]:start() end
  for i = 1, 3 do ready:get() end
  parrun.sleep(0.06)
  for i = 1, 3 do ps[i]:kill() ps[i]:join() end
  for i = 1, 3 do q:put(i) end
  for i = 1, 3 do if not pcall(q.get_nowait, q) then missed = missed + 1 end end
end
print("ghosts", ghosts, "missed", missed)
"#;
    let rhai = r#"
let ready = Queue(); let ghosts = 0; let missed = 0;
for round in 0..3 {
  let q = Queue(1);
  q.put("first");
  let p = Process(|ready, q| { ready.put(true); q.put("ghost"); }, [ready, q]);
  p.start(); ready.get(); sleep(0.1);
  p.kill(); p.join(); q.get();
  try { q.get(0.2); ghosts += 1; } catch {}
  let q = Queue();
  let ps = [];
  for i in 0..3 { let p = Process(|ready, q| { ready.put(true); q.get(); }, [ready, q]); p.start(); ps.push(p); }
  for i in 0..3 { ready.get(); }
  sleep(0.06);
  for p in ps { p.kill(); p.join(); }
  for i in 0..3 { q.put(i); }
  for i in 0..3 { try { q.get_nowait(); } catch { missed += 1; } }
}
print(`ghosts ${ghosts} missed ${missed}`);
"#;
    both_in_modes(&MODES, "ghostput", lua, rhai, |mode, out| {
        out.assert_success();
        let line = out.stdout.replace('\t', " ");
        assert_eq!(
            line.trim(),
            "ghosts 0 missed 0",
            "{mode}: {}",
            out.describe()
        );
    });
}

/// A grandchild (a `Process` of a `Process`) waits on its grandparent's queue as a child does:
/// a `put` on a full bounded queue goes in once the script makes room, and a `get` on an empty
/// one takes what the script puts later. In `fork` its parent, which only holds a handle, put
/// the value on its own copy of the queue (lost) or waited there for ever.
#[test]
fn a_grandchild_waits_on_its_grandparents_queue_as_a_child_does() {
    let lua = r#"
local q, later, back = parrun.Queue(1), parrun.Queue(), parrun.Queue()
q:put("first")
local function child(q, later, back)
  local g = parrun.Process(function(q, later, back) q:put("gc") back:put(later:get(10)) end,
    {q, later, back})
  g:start() g:join()
end
local c = parrun.Process(child, {q, later, back})
c:start()
parrun.sleep(0.2)
print(q:get(10), q:get(10))
parrun.sleep(0.2)
later:put("late")
print(back:get(10))
c:join()
print(c.exitcode, q:qsize())
"#;
    let rhai = r#"
let q = Queue(1); let later = Queue(); let back = Queue();
q.put("first");
fn child(q, later, back) {
  let g = Process(|q, later, back| { q.put("gc"); back.put(later.get(10)); }, [q, later, back]);
  g.start(); g.join();
}
let c = Process(child, [q, later, back]);
c.start();
sleep(0.2);
print(`${q.get(10)} ${q.get(10)}`);
sleep(0.2);
later.put("late");
print(back.get(10));
c.join();
print(`${c.exitcode} ${q.qsize()}`);
"#;
    both_in_modes(&MODES, "grandchild_queue", lua, rhai, |mode, out| {
        out.assert_success();
        let text = out.stdout.replace('\t', " ");
        assert_eq!(text, "first gc\nlate\n0 0\n", "{mode}: {}", out.describe());
    });
}

/// A grandchild killed while it waits on the script's `Condition` or `Barrier` takes nothing
/// there, as a killed child: the condition's lock is free once its wait would have ended, and
/// the barrier is broken rather than counting it. In `fork` its parent forwarded the wait and
/// never withdrew it: the owner took the lock back for the dead grandchild (held for the rest
/// of the run), and the barrier let the script through with the dead party.
#[test]
fn a_killed_grandchild_takes_nothing_from_a_condition_or_barrier() {
    let lua = r#"
local c, b, out, go = parrun.Condition(), parrun.Barrier(2), parrun.Queue(), parrun.Event()
local ready = parrun.Queue()
local function middle(c, b, out, go, ready)
  for _, wait in ipairs({function() c:acquire() ready:put("in") c:wait(1) end,
                         function() ready:put("in") b:wait() end}) do
    local g = parrun.Process(wait)
    g:start() ready:get() parrun.sleep(0.2) g:kill() g:join()
    out:put(g.exitcode)
  end
  go:wait(20)
end
local p = parrun.Process(middle, {c, b, out, go, ready})
p:start()
print(out:get(10), out:get(10))
parrun.sleep(1.2)
print(c:acquire(2)) c:release()
print(b.n_waiting, b.broken, pcall(b.wait, b, 2))
go:set() p:join()
"#;
    let rhai = r#"
let c = Condition(); let b = Barrier(2); let out = Queue(); let done = Event(); let ready = Queue();
fn middle(c, b, out, done, ready) {
  let g = Process(|c, ready| { c.acquire(); ready.put("in"); c.wait(1); }, [c, ready]);
  g.start(); ready.get(); sleep(0.2); g.kill(); g.join();
  out.put(g.exitcode);
  let g = Process(|b, ready| { ready.put("in"); b.wait(); }, [b, ready]);
  g.start(); ready.get(); sleep(0.2); g.kill(); g.join();
  out.put(g.exitcode);
  done.wait(20);
}
let p = Process(middle, [c, b, out, done, ready]);
p.start();
print(`${out.get(10)} ${out.get(10)}`);
sleep(1.2);
print(c.acquire(2)); c.release();
let passed = false;
try { b.wait(2); passed = true; } catch {}
print(`${b.n_waiting} ${b.broken} ${passed}`);
done.set(); p.join();
"#;
    both_in_modes(&MODES, "grandchild_killed", lua, rhai, |mode, out| {
        out.assert_success();
        let lines = out.stdout_lines();
        let lines: Vec<String> = lines.iter().map(|l| l.replace('\t', " ")).collect();
        assert_eq!(lines[..2], ["-9 -9", "true"], "{mode}: {}", out.describe());
        assert!(
            lines[2].starts_with("0 true false"),
            "{mode}: {}",
            out.describe()
        );
    });
}

/// `Condition.wait_for` calls the script's predicate, waits while it is false (woken by each
/// notify), and gives its last result; with a timeout, false once the time is up; its wait's
/// error (the lock not held) names the operation, as Python's:
/// ```python
/// import threading, time
/// c, items = threading.Condition(), []
/// def produce():
///     for i in range(3):
///         time.sleep(0.05)
///         with c: items.append(i); c.notify()
/// t = threading.Thread(target=produce); t.start()
/// with c:
///     print("wait_for", c.wait_for(lambda: len(items) >= 3 and len(items), 5))
///     print("timeout", c.wait_for(lambda: len(items) >= 4, 0.1))
/// try: c.wait_for(lambda: False, 0.01)
/// except RuntimeError as e: print("unheld", e)
/// t.join()
/// ```
#[test]
fn wait_for_waits_until_the_predicate_holds() {
    let lua = r#"
local c, items = parrun.Condition(), parrun.Queue()
local t = parrun.Thread(function()
  for i = 1, 3 do parrun.sleep(0.05) c:with(function() items:put(i) c:notify() end) end
end)
t:start()
c:with(function()
  print("wait_for", c:wait_for(function() return items:qsize() >= 3 and items:qsize() end, 5))
  print("timeout", c:wait_for(function() return items:qsize() >= 4 end, 0.1))
end)
print("unheld", select(2, pcall(c.wait_for, c, function() return false end, 0.01)))
t:join()
"#;
    let rhai = r#"
let c = Condition(); let items = Queue();
let t = Thread(|c, items| {
  for i in 1..=3 { sleep(0.05); with c { items.put(i); c.notify(); } }
}, [c, items]);
t.start();
with c {
  print(`wait_for ${c.wait_for(|| if items.qsize() >= 3 { items.qsize() } else { false }, 5)}`);
  print(`timeout ${c.wait_for(|| items.qsize() >= 4, 0.1)}`);
}
try { c.wait_for(|| false, 0.01); } catch (err) { print(`unheld ${err}`); }
t.join();
"#;
    both_in_modes(&MODES, "waitfor", lua, rhai, |mode, out| {
        out.assert_success();
        let lines: Vec<String> = out
            .stdout_lines()
            .iter()
            .map(|l| l.replace('\t', " "))
            .collect();
        assert_eq!(
            lines,
            [
                "wait_for 3",
                "timeout false",
                "unheld Condition.wait: cannot wait on un-acquired lock (RuntimeError)"
            ],
            "{mode}: {}",
            out.describe()
        );
    });
}

/// A `Barrier` lets its parties go on together, each with its own index; a timeout or an
/// `abort` breaks it for every waiter until a `reset`; forked children are parties too.
/// ```python
/// import threading, queue
/// b, out = threading.Barrier(3), queue.Queue()
/// print("barrier", b.parties, b.n_waiting, b.broken)
/// ts = [threading.Thread(target=lambda: out.put(b.wait(5))) for _ in range(2)]
/// for t in ts: t.start()
/// mine = b.wait(5)
/// for t in ts: t.join()
/// print("indexes", *sorted([mine, out.get(), out.get()]))
/// try: b.wait(0.05)
/// except threading.BrokenBarrierError: print("timeout BrokenBarrierError")
/// print("broken", b.broken)
/// b.reset()
/// print("reset", b.broken)
/// def aborted():
///     try: b.wait()
///     except threading.BrokenBarrierError: out.put("aborted BrokenBarrierError")
/// t = threading.Thread(target=aborted); t.start()
/// while b.n_waiting == 0: pass
/// b.abort(); t.join(); print(out.get())
/// ```
#[test]
fn a_barrier_releases_its_parties_together_and_breaks_as_pythons() {
    let lua = r#"
local b, out = parrun.Barrier(3), parrun.Queue()
print("barrier", b.parties, b.n_waiting, b.broken)
local ts = {}
for i = 1, 2 do ts[i] = parrun.Thread(function() out:put(b:wait(5)) end) ts[i]:start() end
local mine = b:wait(5)
for _, t in ipairs(ts) do t:join() end
local got = {mine, out:get(), out:get()} table.sort(got)
print("indexes", table.concat(got, " "))
local ok, e = pcall(b.wait, b, 0.05)
print("timeout", e:match("BrokenBarrierError"))
print("broken", b.broken)
b:reset()
print("reset", b.broken)
local t = parrun.Thread(function()
  local ok, e = pcall(b.wait, b)
  out:put("aborted " .. e:match("BrokenBarrierError"))
end)
t:start()
while b.n_waiting == 0 do parrun.sleep(0.01) end
b:abort() t:join() print(out:get())
b:reset()
local ps = {}
for i = 1, 2 do ps[i] = parrun.Process(function() out:put(b:wait(10)) end) ps[i]:start() end
mine = b:wait(10)
for _, p in ipairs(ps) do p:join() end
got = {mine, out:get(5), out:get(5)} table.sort(got)
print("processes", table.concat(got, " "))
"#;
    let rhai = r#"
let b = Barrier(3); let out = Queue();
print(`barrier ${b.parties} ${b.n_waiting} ${b.broken}`);
let ts = [];
for i in 0..2 { let t = Thread(|b, out| out.put(b.wait(5)), [b, out]); t.start(); ts.push(t); }
let mine = b.wait(5);
for t in ts { t.join(); }
let got = [mine, out.get(), out.get()]; got.sort();
print(`indexes ${got[0]} ${got[1]} ${got[2]}`);
try { b.wait(0.05); } catch (e) { if e.contains("BrokenBarrierError") { print("timeout BrokenBarrierError"); } }
print(`broken ${b.broken}`);
b.reset();
print(`reset ${b.broken}`);
let t = Thread(|b, out| {
  try { b.wait(); } catch (e) { if e.contains("BrokenBarrierError") { out.put("aborted BrokenBarrierError"); } }
}, [b, out]);
t.start();
while b.n_waiting == 0 { sleep(0.01); }
b.abort(); t.join(); print(out.get());
b.reset();
let ps = [];
for i in 0..2 { let p = Process(|b, out| out.put(b.wait(10)), [b, out]); p.start(); ps.push(p); }
mine = b.wait(10);
for p in ps { p.join(); }
got = [mine, out.get(5), out.get(5)]; got.sort();
print(`processes ${got[0]} ${got[1]} ${got[2]}`);
"#;
    both_in_modes(&MODES, "barrier", lua, rhai, |mode, out| {
        out.assert_success();
        let lines: Vec<String> = out
            .stdout_lines()
            .iter()
            .map(|l| l.replace('\t', " "))
            .collect();
        assert_eq!(
            lines,
            [
                "barrier 3 0 false",
                "indexes 0 1 2",
                "timeout BrokenBarrierError",
                "broken true",
                "reset false",
                "aborted BrokenBarrierError",
                "processes 0 1 2",
            ],
            "{mode}: {}",
            out.describe()
        );
    });
}

/// A `Lock` shared by a pool's workers, a `Process` and the script excludes them from each
/// other, in every mode: in `fork` the children take and free the parent's lock themselves
/// (a word in memory they share), and the parent sees what they did. Each critical section
/// logs its entry and exit through a bounded queue (a put that waits for the parent): an entry
/// while another is inside is an overlap. Without the lock, this program logs about a hundred.
#[test]
fn a_lock_excludes_workers_processes_and_the_script_from_each_other() {
    let lua = r#"
LOCK, LOG = parrun.Lock(), parrun.Queue(100000)
local function worker(id)
  for i = 1, 30 do
    LOCK:acquire()
    LOG:put("enter " .. id)
    parrun.sleep(0.0005)
    LOG:put("leave " .. id)
    LOCK:release()
  end
  return id
end
local p = parrun.Process(worker, {"p"})
p:start()
local pool = parrun.Pool(2)
pool:map(worker, {"a", "b"}, 1)
p:join()
local inside, enters, overlaps = nil, 0, 0
while not LOG:empty() do
  local kind, id = LOG:get():match("(%a+) (%a+)")
  if kind == "enter" then
    if inside then overlaps = overlaps + 1 end
    inside, enters = id, enters + 1
  else
    if inside ~= id then overlaps = overlaps + 1 end
    inside = nil
  end
end
print(("enters %d overlaps %d"):format(enters, overlaps))
-- Held in a child, seen and freed by the parent; a child's release of a free lock fails.
local held, go = parrun.Event(), parrun.Event()
local child = parrun.Process(function()
  LOCK:acquire() held:set() go:wait(10)
  print("child waits for the parent's release " .. tostring(LOCK:acquire(true, 10)))
  LOCK:release()
  print("child release of a free lock: " .. select(2, pcall(LOCK.release, LOCK)))
end, {})
child:start()
held:wait(10)
print(("parent sees it held %s %s"):format(LOCK:locked(), LOCK:acquire(false)))
go:set()
parrun.sleep(0.05)
LOCK:release()
child:join()
print(("free at the end %s %d"):format(not LOCK:locked(), child.exitcode))
"#;
    let rhai = r#"
const LOCK = Lock();
const LOG = Queue(100000);
fn worker(id) {
  for i in 0..30 {
    global::LOCK.acquire();
    global::LOG.put(`enter ${id}`);
    sleep(0.0005);
    global::LOG.put(`leave ${id}`);
    global::LOCK.release();
  }
  id
}
let p = Process(worker, ["p"]);
p.start();
let pool = Pool(2);
pool.map(worker, ["a", "b"], 1);
p.join();
let inside = ();
let enters = 0;
let overlaps = 0;
while !LOG.empty() {
  let parts = LOG.get().split(" ");
  if parts[0] == "enter" {
    if inside != () { overlaps += 1; }
    inside = parts[1];
    enters += 1;
  } else {
    if inside != parts[1] { overlaps += 1; }
    inside = ();
  }
}
print(`enters ${enters} overlaps ${overlaps}`);
const HELD = Event();
const GO = Event();
fn child() {
  global::LOCK.acquire();
  global::HELD.set();
  global::GO.wait(10);
  print(`child waits for the parent's release ${global::LOCK.acquire(true, 10)}`);
  global::LOCK.release();
  try { global::LOCK.release(); print("child release of a free lock: no error"); }
  catch (e) { print(`child release of a free lock: ${e}`); }
}
let c = Process(child, []);
c.start();
HELD.wait(10);
print(`parent sees it held ${LOCK.locked()} ${LOCK.acquire(false)}`);
GO.set();
sleep(0.05);
LOCK.release();
c.join();
print(`free at the end ${!LOCK.locked()} ${c.exitcode}`);
"#;
    both_in_modes(&MODES, "shared_lock", lua, rhai, |mode, out| {
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            [
                "enters 90 overlaps 0",
                "parent sees it held true false",
                "child waits for the parent's release true",
                "child release of a free lock: Lock.release: release of an unlocked Lock \
                 (RuntimeError: release unlocked lock)",
                "free at the end true 0",
            ],
            "{mode}: {}",
            out.describe()
        );
    });
}

/// An `Event` is shared with forked children as a word in memory, as a `Lock` is: a pool's
/// worker polling `is_set()` sees the script's `set`, a child's `set` wakes the script, and a
/// `set` followed at once by a `clear` still wakes a waiting child with true, as Python's
/// `wait` returns (the `set` woke it). Every mode, both languages.
#[test]
fn an_event_is_seen_and_set_across_processes() {
    let lua = r#"
GO, BACK, PULSE = parrun.Event(), parrun.Event(), parrun.Event()
local pool = parrun.Pool(1)
local polls = pool:apply_async(function()
  local n = 0
  while not GO:is_set() do n = n + 1 parrun.sleep(0.001) end
  BACK:set()
  return n >= 0
end, {})
local waiter = parrun.Process(function()
  BACK:wait(10)
  print("woken " .. tostring(PULSE:wait(10)))
end, {})
waiter:start()
parrun.sleep(0.1)
GO:set()
print("back " .. tostring(BACK:wait(10)) .. " " .. tostring(polls:get(10)))
parrun.sleep(0.5)
PULSE:set() PULSE:clear()
waiter:join(10)
print("exitcode " .. waiter.exitcode)
"#;
    let rhai = r#"
const GO = Event();
const BACK = Event();
const PULSE = Event();
fn poll() {
  let n = 0;
  while !global::GO.is_set() { n += 1; sleep(0.001); }
  global::BACK.set();
  n >= 0
}
fn wait_pulse() {
  global::BACK.wait(10);
  print(`woken ${global::PULSE.wait(10)}`);
}
let pool = Pool(1);
let polls = pool.apply_async(Fn("poll"), []);
let waiter = Process(Fn("wait_pulse"), []);
waiter.start();
sleep(0.1);
GO.set();
print(`back ${BACK.wait(10)} ${polls.get(10)}`);
sleep(0.5);
PULSE.set(); PULSE.clear();
waiter.join(10);
print(`exitcode ${waiter.exitcode}`);
"#;
    both_in_modes(&MODES, "sharedevent", lua, rhai, |mode, out| {
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["back true true", "woken true", "exitcode 0"],
            "{mode}: {}",
            out.describe()
        );
    });
}

/// A `BoundedSemaphore(2)` shared by a pool's workers, a `Process` and the script lets in two
/// at most, in every mode: in `fork` the children take and give back the parent's counter
/// themselves (a word in memory they share: a pair took 106 µs through the parent, 1.2 µs so),
/// and the parent reads what they left. Entries and exits are logged through a bounded queue.
#[test]
fn a_semaphore_counts_for_workers_processes_and_the_script_alike() {
    let lua = r#"
SEM, LOG = parrun.BoundedSemaphore(2), parrun.Queue(100000)
local function worker(id)
  for i = 1, 30 do
    SEM:acquire()
    LOG:put(1)
    parrun.sleep(0.0005)
    LOG:put(-1)
    SEM:release()
  end
  return id
end
local p = parrun.Process(worker, {"p"})
p:start()
local pool = parrun.Pool(2)
pool:map(worker, {"a", "b"}, 1)
p:join()
local inside, most, enters = 0, 0, 0
while not LOG:empty() do
  local step = LOG:get()
  inside = inside + step
  if step == 1 then enters = enters + 1 end
  most = math.max(most, inside)
end
print(("enters %d most %d"):format(enters, most <= 2 and 2 or most))
local child = parrun.Process(function()
  SEM:acquire() SEM:acquire()
  print("child took both, a third: " .. tostring(SEM:acquire(0.05)))
  SEM:release() SEM:release()
  print("child release past the bound: " .. select(2, pcall(SEM.release, SEM)))
end, {})
child:start() child:join()
print(tostring(SEM), child.exitcode)
pool:close() pool:join()
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "semaphore", "lua", lua);
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            [
                "enters 90 most 2",
                "child took both, a third: false",
                "child release past the bound: Semaphore.release: Semaphore released too many \
                 times (ValueError)",
                "<BoundedSemaphore value=2/2>\t0",
            ],
            "{mode}: {}",
            out.describe()
        );
    }
}

/// `close` is per process, as `multiprocessing.Queue.close` is: a later `get` or `put` in the
/// process that closed its handle is a ValueError (a `get` waited out its timeout), while a
/// child's `put` still goes in, in every mode (on a thread, a Process's put was refused).
#[test]
fn a_closed_queue_refuses_this_process_only() {
    both_in_modes(
        &MODES,
        "queue_close",
        r#"
local q = parrun.Queue()
local p = parrun.Process(function(q) parrun.sleep(0.2) q:put("from child") end, {q})
p:start()
q:close()
p:join()
print(p.exitcode, q:qsize())
print(pcall(q.get, q, 0.1))
print(pcall(q.put, q, 1))
"#,
        r#"
let q = Queue();
let p = Process(|q| { sleep(0.2); q.put("from child"); }, [q]);
p.start();
q.close();
p.join();
print(`${p.exitcode}	${q.qsize()}`);
try { q.get(0.1); } catch (e) { print(`false	${e}`); }
try { q.put(1); } catch (e) { print(`false	${e}`); }
"#,
        |mode, out| {
            out.assert_success();
            let closed = "the queue is closed (ValueError: Queue is closed)";
            let lines = out.stdout_lines();
            assert_eq!(lines.len(), 3, "{mode}: {}", out.describe());
            assert_eq!(lines[0], "0\t1", "{mode}: {}", out.describe());
            assert!(
                lines[1].starts_with("false\t")
                    && lines[1].contains("Queue.get: ")
                    && lines[1].ends_with(closed),
                "{mode}: {}",
                out.describe()
            );
            assert!(
                lines[2].starts_with("false\t") && lines[2].ends_with(closed),
                "{mode}: {}",
                out.describe()
            );
        },
    );
}
