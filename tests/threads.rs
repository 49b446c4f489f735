//! Script threads, queues and locks under the GIL: errors in threads, `Queue.get` timeouts,
//! copying, the scoped lock, shared state, CPU-bound threads interleaving, blocking calls
//! overlapping, the forms a thread's function takes, and the script waiting for its threads.

mod common;

use common::{
    both_in_modes, float_after, run_code, run_main, run_main_with, Lang, Run, TempDir, MODES,
};

// ---------------------------------------------------------------------------------------
// Threads, queues, locks
// ---------------------------------------------------------------------------------------

#[test]
fn error_in_a_thread_is_reported_and_the_script_goes_on() {
    let lua =
        "function worker(n)\n  if n == 2 then error('bad worker') end\n  print('ok ' .. n)\nend\n\
               local a = parrun.Thread(worker, {1})\nlocal b = parrun.Thread(worker, {2}, 'Boom')\n\
               local c = parrun.Thread(worker, {2})\n\
               print(a.name, b.name, c.name)\n\
               a:start() a:join() b:start() b:join() c:start() c:join()\n\
               print('still running', b:is_alive())\n";
    let rhai = "fn worker(n) {\n  if n == 2 { throw \"bad worker\"; }\n  print(`ok ${n}`);\n}\n\
                let a = Thread(worker, [1]);\nlet b = Thread(worker, [2], \"Boom\");\n\
                let c = Thread(Fn(\"worker\"), [2]);\n\
                print(`${a.name}\t${b.name}\t${c.name}`);\n\
                a.start(); a.join(); b.start(); b.join(); c.start(); c.join();\n\
                print(`still running\t${b.is_alive()}`);\n";
    for (lang, code) in [(Lang::Lua, lua), (Lang::Rhai, rhai)] {
        let out = run_main(lang, code);
        out.assert_success()
            .assert_stderr_contains("Exception in thread Boom:")
            .assert_stderr_contains("Exception in thread Thread-2 (worker):")
            .assert_stderr_contains(&format!("{}:2:", lang.file("main")))
            .assert_stderr_contains("bad worker");
        assert_eq!(
            out.stdout_lines(),
            [
                "Thread-1 (worker)\tBoom\tThread-2 (worker)",
                "ok 1",
                "still running\tfalse"
            ],
            "{}",
            out.describe()
        );
        // The report names the thread first, then the error.
        let header = out.stderr.find("Exception in thread Boom:").unwrap();
        let message = out.stderr[header..].find("bad worker");
        assert!(message.is_some(), "{}", out.describe());
    }
}

#[test]
fn queue_get_timeout_raises_empty() {
    let lua = r#"
        local q = parrun.Queue()
        local t0 = parrun.time()
        local ok, err = pcall(function() return q:get(0.2) end)
        print(ok, parrun.time() - t0 >= 0.15)
        print(err)
        q:put("x")
        print(q:get(0.2), q:empty(), q:qsize())
    "#;
    let rhai = r#"
        let q = Queue();
        let t0 = time();
        try {
            q.get(0.2);
            print("no error");
        } catch (err) {
            print(`false ${time() - t0 >= 0.15}`);
            print(err);
        }
        q.put("x");
        print(`${q.get(0.2)} ${q.empty()} ${q.qsize()}`);
    "#;
    for (lang, code) in [(Lang::Lua, lua), (Lang::Rhai, rhai)] {
        let out = run_main(lang, code);
        out.assert_success();
        let lines = out.stdout_lines();
        assert_eq!(lines.len(), 3, "{}", out.describe());
        assert_eq!(
            lines[0].replace('\t', " "),
            "false true",
            "{}",
            out.describe()
        );
        assert!(lines[1].contains("Empty"), "{}", out.describe());
        assert_eq!(
            lines[2].replace('\t', " "),
            "x true 0",
            "{}",
            out.describe()
        );
    }

    // Uncaught, it ends the script with status 1.
    let out = run_main(Lang::Lua, "parrun.Queue():get(0.05)\n");
    out.assert_code(1).assert_stderr_contains("Empty");
    let out = run_main(Lang::Rhai, "Queue().get(0.05);\n");
    out.assert_code(1).assert_stderr_contains("Empty");
}

#[test]
fn queue_values_are_copied_and_objects_are_refused() {
    let lua = r#"
        local q = parrun.Queue()
        local t = {1, 2, {x = "y"}}
        q:put(t)
        t[1] = 99
        local got = q:get()
        print(got[1], got[3].x, got == t)
        q:put(1.5) q:put(true) q:put("s") q:put(7)
        local f, b, s, i = q:get(), q:get(), q:get(), q:get()
        print(f, b, s, i, math.type(i))
        print(pcall(q.put, q, q))
        print(pcall(q.put, q, print))
    "#;
    let out = run_main(Lang::Lua, lua);
    out.assert_success();
    let lines = out.stdout_lines();
    assert_eq!(
        lines[..2],
        ["1\ty\tfalse", "1.5\ttrue\ts\t7\tinteger"],
        "{}",
        out.describe()
    );
    assert!(lines[2].starts_with("false\t"), "{}", out.describe());
    assert!(lines[3].starts_with("false\t"), "{}", out.describe());

    let rhai = r#"
        let q = Queue();
        let t = [1, 2, #{x: "y"}];
        q.put(t);
        t[0] = 99;
        let got = q.get();
        print(`${got[0]} ${got[2].x}`);
        q.put(1.5); q.put(true); q.put("s"); q.put(7);
        print(`${q.get()} ${q.get()} ${q.get()} ${type_of(q.get())}`);
        try { q.put(q); print("put a queue"); } catch (e) { print("refused"); }
    "#;
    let out = run_main(Lang::Rhai, rhai);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        ["1 y", "1.5 true s i64", "refused"],
        "{}",
        out.describe()
    );
}

#[test]
fn lock_scoped_form_releases_the_lock_when_the_body_fails() {
    let lua = r#"
        local lock = parrun.Lock()
        local ok, err = pcall(function()
            return lock:with(function() error("x") end)
        end)
        print(ok, err:match("x$") ~= nil, lock:locked())
        print(lock:with(function(a, b) print("inside", lock:locked()) return a + b, a * b end, 3, 4))
        print(lock:locked(), lock:acquire(), lock:locked(), lock:acquire(0.05))
        lock:release()
        print(lock:locked())
    "#;
    let out = run_main(Lang::Lua, lua);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        [
            "false\ttrue\tfalse",
            "inside\ttrue",
            "7\t12",
            "false\ttrue\ttrue\tfalse",
            "false",
        ],
        "{}",
        out.describe()
    );

    let rhai = r#"
        let lock = Lock();
        try {
            with lock { throw "x"; }
        } catch (err) {
            print(`caught ${err} ${lock.locked()}`);
        }
        let v = with lock { print(`inside ${lock.locked()}`); 42 };
        print(v);
        print(`${lock.locked()} ${lock.acquire()} ${lock.locked()} ${lock.acquire(0.05)}`);
        lock.release();
        print(lock.locked());
    "#;
    let out = run_main(Lang::Rhai, rhai);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        [
            "caught x false",
            "inside true",
            "42",
            "false true true false",
            "false"
        ],
        "{}",
        out.describe()
    );
}

#[test]
fn shared_state_under_a_lock() {
    // Lua: a global counter, shared by every thread, incremented under the lock.
    let lua = r#"
        counter = 0
        local lock = parrun.Lock()
        local function work(n)
            for _ = 1, n do
                lock:with(function()
                    local c = counter
                    for _ = 1, 10 do end  -- widen the window between read and write
                    counter = c + 1
                end)
            end
        end
        local threads = {}
        for i = 1, 4 do
            threads[i] = parrun.Thread(work, {2000})
            threads[i]:start()
        end
        for _, t in ipairs(threads) do t:join() end
        print("counter = " .. counter)
    "#;
    // Rhai: a counter captured by the closure every thread runs.
    let rhai = r#"
        let counter = 0;
        let lock = Lock();
        let work = |n| {
            for round in 0..n {
                with lock {
                    let c = counter;
                    for spin in 0..10 {}
                    counter = c + 1;
                }
            }
        };
        let threads = [];
        for i in 0..4 {
            let t = Thread(work, [300]);
            t.start();
            threads.push(t);
        }
        for t in threads { t.join(); }
        print(`counter = ${counter}`);
    "#;
    let out = run_main_with(Lang::Lua, lua, &["--switch-interval", "1"], &[]);
    out.assert_success();
    assert_eq!(out.stdout, "counter = 8000\n", "{}", out.describe());
    let out = run_main_with(Lang::Rhai, rhai, &["--switch-interval", "1"], &[]);
    out.assert_success();
    assert_eq!(out.stdout, "counter = 1200\n", "{}", out.describe());
}

/// Two CPU-bound threads, `ROUNDS` rounds each of ~10-30 ms busy work, each putting its id on
/// a queue after every round; prints the sequence of ids.
const ROUNDS: usize = 8;

fn interleave_script(lang: Lang) -> String {
    match lang {
        Lang::Lua => format!(
            r#"
            local q = parrun.Queue()
            local function busy(id)
                for _ = 1, {ROUNDS} do
                    local x = 0
                    for i = 1, 1000000 do x = x + i % 7 end
                    q:put(id)
                end
            end
            local a = parrun.Thread(busy, {{1}})
            local b = parrun.Thread(busy, {{2}})
            a:start() b:start()
            a:join() b:join()
            local seq = {{}}
            while not q:empty() do seq[#seq + 1] = q:get() end
            print("sequence: " .. table.concat(seq, " "))
            "#
        ),
        Lang::Rhai => format!(
            r#"
            let q = Queue();
            fn busy(q, id) {{
                for round in 0..{ROUNDS} {{
                    let x = 0;
                    for i in 0..10000 {{ x += i % 7; }}
                    q.put(id);
                }}
            }}
            let a = Thread(busy, [q, 1]);
            let b = Thread(busy, [q, 2]);
            a.start(); b.start();
            a.join(); b.join();
            let seq = "";
            while !q.empty() {{ seq += ` ${{q.get()}}`; }}
            print(`sequence:${{seq}}`);
            "#
        ),
    }
}

#[test]
fn cpu_bound_threads_interleave() {
    for lang in Lang::ALL {
        let out = run_main_with(
            lang,
            &interleave_script(lang),
            &["--switch-interval", "1"],
            &[],
        );
        out.assert_success();
        let seq: Vec<u32> = out
            .stdout_value("sequence:")
            .split_whitespace()
            .map(|id| id.parse().expect("an id"))
            .collect();
        for id in [1, 2] {
            assert_eq!(
                seq.iter().filter(|&&x| x == id).count(),
                ROUNDS,
                "thread {id} did not report every round ({lang:?})\n{}",
                out.describe()
            );
        }
        // The thread that finished first: both ids must appear before its last entry, or the
        // threads ran one after the other instead of taking turns.
        let last = |id| seq.iter().rposition(|&x| x == id).unwrap();
        let first_done = last(1).min(last(2));
        let before = &seq[..first_done];
        assert!(
            before.contains(&1) && before.contains(&2),
            "the threads did not interleave ({lang:?}): {seq:?}\n{}",
            out.describe()
        );
    }
}

/// A thread blocked in a method of a variable it shares with other threads (a Lua upvalue, a
/// Rhai closure capture) must not stop the others from using that variable.
fn captured_queue_script(lang: Lang) -> &'static str {
    match lang {
        Lang::Lua => {
            r#"
            local q = parrun.Queue()
            local function worker() print("got " .. q:get()) end
            local a, b = parrun.Thread(worker), parrun.Thread(worker)
            a:start() b:start()
            parrun.sleep(0.2)  -- both workers are now blocked in q:get()
            q:put(1) q:put(2)
            a:join() b:join()
            print("done")
            "#
        }
        Lang::Rhai => {
            r#"
            let q = Queue();
            let worker = || print(`got ${q.get()}`);
            let a = Thread(worker, []);
            let b = Thread(worker, []);
            a.start(); b.start();
            sleep(0.2);  // both workers are now blocked in q.get()
            q.put(1); q.put(2);
            a.join(); b.join();
            print("done");
            "#
        }
    }
}

#[track_caller]
fn check_captured_queue(lang: Lang) {
    let dir = TempDir::new("captured");
    let file = lang.file("main");
    dir.write(&file, captured_queue_script(lang));
    let out = Run::new([file.as_str()])
        .dir(dir.path())
        .timeout(std::time::Duration::from_secs(15))
        .output();
    out.assert_success();
    // Which woken worker prints first is up to the GIL's hand-over order.
    let mut lines = out.stdout_lines();
    lines[..2].sort_unstable();
    assert_eq!(lines, ["got 1", "got 2", "done"], "{}", out.describe());
    assert!(out.stderr.is_empty(), "{}", out.describe());
}

#[test]
fn blocking_call_on_a_shared_upvalue_lua() {
    check_captured_queue(Lang::Lua);
}

/// The blocked `q.get()` must not keep Rhai's lock on the captured variable `q` (it did once:
/// the second worker failed with "Data race detected" and the main thread's `q.put` hung).
#[test]
fn blocking_call_on_a_captured_variable_rhai() {
    check_captured_queue(Lang::Rhai);
}

#[test]
fn sleeping_threads_overlap() {
    // Each thread records (relative to t0) when it starts and finishes its 0.5 s sleep.
    let lua = r#"
        local q = parrun.Queue()
        local t0 = parrun.time()
        local function napper()
            local start = parrun.time() - t0
            parrun.sleep(0.5)
            q:put({start = start, finish = parrun.time() - t0})
        end
        local threads = {}
        for i = 1, 4 do
            threads[i] = parrun.Thread(napper)
            threads[i]:start()
        end
        for _, t in ipairs(threads) do t:join() end
        local elapsed = parrun.time() - t0
        local last_start, first_finish = -1, math.huge
        for _ = 1, 4 do
            local r = q:get()
            last_start = math.max(last_start, r.start)
            first_finish = math.min(first_finish, r.finish)
        end
        print("elapsed: " .. elapsed)
        print("last start: " .. last_start)
        print("first finish: " .. first_finish)
    "#;
    let rhai = r#"
        let q = Queue();
        let t0 = time();
        let napper = || {
            let start = time() - t0;
            sleep(0.5);
            q.put(#{ start: start, finish: time() - t0 });
        };
        let threads = [];
        for i in 0..4 {
            let t = Thread(napper, []);
            t.start();
            threads.push(t);
        }
        for t in threads { t.join(); }
        let elapsed = time() - t0;
        let last_start = -1.0;
        let first_finish = 1e9;
        for i in 0..4 {
            let r = q.get();
            last_start = max(last_start, r.start);
            first_finish = min(first_finish, r.finish);
        }
        print(`elapsed: ${elapsed}`);
        print(`last start: ${last_start}`);
        print(`first finish: ${first_finish}`);
    "#;
    for (lang, code) in [(Lang::Lua, lua), (Lang::Rhai, rhai)] {
        let out = run_main(lang, code);
        out.assert_success();
        let elapsed = float_after(&out, "elapsed:");
        let last_start = float_after(&out, "last start:");
        let first_finish = float_after(&out, "first finish:");
        assert!(
            elapsed >= 0.45,
            "4 threads sleeping 0.5 s finished too soon: {elapsed} s ({lang:?})\n{}",
            out.describe()
        );
        assert!(
            elapsed < 1.0,
            "4 threads sleeping 0.5 s took {elapsed} s: the sleeps did not overlap ({lang:?})\n{}",
            out.describe()
        );
        assert!(
            last_start < first_finish,
            "a thread finished sleeping before another one started ({lang:?})\n{}",
            out.describe()
        );
    }
}

#[test]
fn thread_functions_in_every_form() {
    // Lua: a function value, a closure over upvalues, and a global function's name.
    let lua = r#"
        local q = parrun.Queue()
        function global_worker(x) q:put("global " .. x) end
        local function local_worker(x, y) q:put("local " .. x + y) end
        local k = 100
        local ts = {
            parrun.Thread(local_worker, {1, 2}),
            parrun.Thread(function() q:put("closure " .. k) end),
            parrun.Thread("global_worker", {"by name"}),
        }
        for _, t in ipairs(ts) do t:start() t:join() end
        while not q:empty() do print(q:get()) end
        print(ts[1]:is_alive(), tostring(ts[1]):match("^<Thread%(Thread%-1") ~= nil)
    "#;
    let out = run_main(Lang::Lua, lua);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        ["local 3", "closure 100", "global by name", "false\ttrue"],
        "{}",
        out.describe()
    );

    // Rhai: a bare function name, Fn("name"), and a closure.
    let rhai = r#"
        let q = Queue();
        fn worker(q, x, y) { q.put(`named ${x + y}`); }
        let k = 100;
        let ts = [
            Thread(worker, [q, 1, 2]),
            Thread(Fn("worker"), [q, 10, 20]),
            Thread(|| q.put(`closure ${k}`), []),
        ];
        for t in ts { t.start(); t.join(); }
        while !q.empty() { print(q.get()); }
        print(ts[0].is_alive());
    "#;
    let out = run_main(Lang::Rhai, rhai);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        ["named 3", "named 30", "closure 100", "false"],
        "{}",
        out.describe()
    );
}

#[test]
fn the_script_waits_for_unjoined_threads() {
    let lua = r#"
        parrun.Thread(function() parrun.sleep(0.2) print("thread done") end):start()
        print("main done")
    "#;
    let rhai = r#"
        Thread(|| { sleep(0.2); print("thread done"); }, []).start();
        print("main done");
    "#;
    for (lang, code) in [(Lang::Lua, lua), (Lang::Rhai, rhai)] {
        let out = run_main(lang, code);
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["main done", "thread done"],
            "{}",
            out.describe()
        );
    }
}

#[test]
fn utility_functions() {
    let lua = r#"
        local t = parrun.time()
        print(math.type(t), t > 1.6e9)
        print(math.type(parrun.getpid()), parrun.getpid() > 0)
        print(math.type(parrun.cpu_count()), parrun.cpu_count() >= 1)
        local ok = true
        for _ = 1, 1000 do
            local r = parrun.random()
            if not (r >= 0 and r < 1) then ok = false end
        end
        print(ok)
    "#;
    let rhai = r#"
        let t = time();
        print(`${type_of(t)} ${t > 1.6e9}`);
        print(`${type_of(getpid())} ${getpid() > 0}`);
        print(`${type_of(cpu_count())} ${cpu_count() >= 1}`);
        let ok = true;
        for i in 0..1000 {
            let r = random();
            if !(r >= 0.0 && r < 1.0) { ok = false; }
        }
        print(ok);
    "#;
    let out = run_main(Lang::Lua, lua);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        ["float\ttrue", "integer\ttrue", "integer\ttrue", "true"],
        "{}",
        out.describe()
    );
    let out = run_main(Lang::Rhai, rhai);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        ["f64 true", "i64 true", "i64 true", "true"],
        "{}",
        out.describe()
    );
}

/// A thread that joins itself, and a process on a thread (`gil`, `isolated`) that joins
/// itself, get Python's error at once: they waited for ever (or for the whole timeout). The
/// run goes on. Every model, both languages.
#[test]
fn a_thread_or_a_process_that_joins_itself_gets_an_error_not_a_hang() {
    both_in_modes(
        &MODES,
        "selfjoin",
        r#"
local t
t = parrun.Thread(function() local ok, e = pcall(t.join, t) print("thread " .. e) end)
t:start() t:join()
if parrun.mode() ~= "fork" then
  local p
  p = parrun.Process(function() local ok, e = pcall(p.join, p) print("process " .. e) end)
  p:start() p:join()
  print("exitcode " .. p.exitcode)
end
"#,
        r#"
let holder = [()];
let t = Thread(|| { try { holder[0].join(); print("thread joined"); } catch (e) { print(`thread ${e}`); } });
holder[0] = t;
t.start(); t.join();
if mode() != "fork" {
  let ph = [()];
  let p = Process(|| { try { ph[0].join(); print("process joined"); } catch (e) { print(`process ${e}`); } });
  ph[0] = p;
  p.start(); p.join();
  print(`exitcode ${p.exitcode}`);
}
"#,
        |mode, out| {
            out.assert_success();
            let mut expected = vec![
                "thread Thread.join: a thread cannot wait for its own end (RuntimeError: cannot \
                 join current thread)",
            ];
            if mode != "fork" {
                expected.extend([
                    "process Process.join: a process cannot wait for its own end \
                     (AssertionError: can only join a child process)",
                    "exitcode 0",
                ]);
            }
            assert_eq!(out.stdout_lines(), expected, "{mode}: {}", out.describe());
        },
    );
}

/// Threads that read an array the script's closures captured, at once and for many GIL
/// turns, all finish, as Python threads reading a shared list do; and so do the tasks of a
/// thread pool reading one. In Rhai a captured variable is a shared cell that Rhai locks while
/// it indexes it or calls a method on it, and a thread that handed the GIL over in the middle
/// of `data[i][1]` kept that lock: the next thread to read `data` failed with "Data race
/// detected" (every time with three threads). Lua's twin runs beside it.
#[test]
fn threads_reading_a_captured_array_at_once_all_finish() {
    let lua = r#"
local data = {}
for i = 1, 100 do data[i] = {i, i * 2} end
local sums = {}
local function reader(id)
  local s = 0
  for _ = 1, 2000 do for i = 1, 100 do s = s + data[i][2] + #data end end
  sums[id] = s
end
local ts = {}
for id = 1, 3 do ts[id] = parrun.Thread(reader, {id}); ts[id]:start() end
for _, t in ipairs(ts) do t:join() end
print(("threads %d %d %d"):format(sums[1], sums[2], sums[3]))
local pool = parrun.ThreadPool(3)
local r = pool:map(function(k) local s = 0 for _ = 1, 200 do for i = 1, 100 do s = s + data[i][2] end end return s + k end, {1, 2, 3}, 1)
print(("pool %d %d %d"):format(r[1], r[2], r[3]))
"#;
    let rhai = r#"
let data = [];
for i in 1..=100 { data.push([i, i * 2]); }
let sums = [0, 0, 0];
let reader = |id| {
  let s = 0;
  for r in 0..2000 { for i in 0..100 { s += data[i][1] + data.len(); } }
  sums[id] = s;
};
let ts = [];
for id in 0..3 { let t = Thread(reader, [id]); t.start(); ts.push(t); }
for t in ts { t.join(); }
print(`threads ${sums[0]} ${sums[1]} ${sums[2]}`);
let pool = ThreadPool(3);
let r = pool.map(|k| { let s = 0; for n in 0..200 { for i in 0..100 { s += data[i][1]; } } s + k }, [1, 2, 3], 1);
print(`pool ${r[0]} ${r[1]} ${r[2]}`);
"#;
    // On grain too: a script whose threads share captured variables runs on the tree walker.
    both_in_modes(&["gil"], "shared_reads", lua, rhai, |_, out| {
        out.assert_success();
        assert!(!out.stderr.contains("Data race"), "{}", out.describe());
        let each = 2000 * (10100 + 100 * 100);
        assert_eq!(
            out.stdout_value("threads"),
            format!("{each} {each} {each}"),
            "{}",
            out.describe()
        );
        assert_eq!(
            out.stdout_value("pool"),
            "2020001 2020002 2020003",
            "{}",
            out.describe()
        );
    });
}

/// Threads and thread-pool tasks that call a method with a closure on an array the script's
/// closures captured (`data.map(|x| x + k)`), while the others read it, all finish. Rhai keeps
/// `data` locked for the whole `map`, and the thread handed the GIL over at the closure's
/// variable reads with the lock held: the next thread to read `data` failed with "Data race
/// detected" (two threads of three, every run). Lua's twin runs beside it.
#[test]
fn threads_calling_a_method_with_a_closure_on_a_captured_array_all_finish() {
    let lua = r#"
local data = {}
for i = 1, 200 do data[i] = i end
local k = 3
local function map(t, f) local r = {} for i = 1, #t do r[i] = f(t[i]) end return r end
local sums = {}
local function work(id)
  local s = 0
  for r = 1, 30 do local m = map(data, function(x) return x + k end) s = s + m[r] + #data end
  sums[id] = s
end
local ts = {}
for id = 1, 3 do ts[id] = parrun.Thread(work, {id}); ts[id]:start() end
for _, t in ipairs(ts) do t:join() end
print(("threads %d %d %d"):format(sums[1], sums[2], sums[3]))
local pool = parrun.ThreadPool(3)
local r = pool:map(function(j) local s = 0 for n = 1, 10 do s = s + #map(data, function(x) return x + k end) end return s + j end, {1, 2, 3}, 1)
print(("pool %d %d %d"):format(r[1], r[2], r[3]))
"#;
    let rhai = r#"
let data = [];
for i in 1..=200 { data.push(i); }
let k = 3;
let sums = [0, 0, 0];
let work = |id| {
  let s = 0;
  for r in 0..30 { let m = data.map(|x| x + k); s += m[r] + data.len(); }
  sums[id] = s;
};
let ts = [];
for id in 0..3 { let t = Thread(work, [id]); t.start(); ts.push(t); }
for t in ts { t.join(); }
print(`threads ${sums[0]} ${sums[1]} ${sums[2]}`);
let pool = ThreadPool(3);
let r = pool.map(|j| { let s = 0; for n in 0..10 { s += data.map(|x| x + k).len(); } s + j }, [1, 2, 3], 1);
print(`pool ${r[0]} ${r[1]} ${r[2]}`);
"#;
    both_in_modes(&["gil"], "method_closures", lua, rhai, |_, out| {
        out.assert_success();
        assert!(!out.stderr.contains("Data race"), "{}", out.describe());
        // m[r] is r + 1 + k for r = 0..29 (Lua: r + k, r = 1..30), plus #data each time.
        let each = (1..=30).map(|r| r + 3).sum::<i64>() + 30 * 200;
        assert_eq!(
            out.stdout_value("threads"),
            format!("{each} {each} {each}"),
            "{}",
            out.describe()
        );
        assert_eq!(
            out.stdout_value("pool"),
            "2001 2002 2003",
            "{}",
            out.describe()
        );
    });
    // A pool of threads asked for by its `mode` option, under another `--mode`.
    let lua = r#"
local data = {}
for i = 1, 200 do data[i] = i end
local k = 3
local function map(t, f) local r = {} for i = 1, #t do r[i] = f(t[i]) end return r end
local pool = parrun.Pool(3, {mode = "gil"})
local r = pool:map(function(j) local s = 0 for n = 1, 60 do s = s + #map(data, function(x) return x + k end) end return s + j end, {1, 2, 3}, 1)
print(("pool %d %d %d"):format(r[1], r[2], r[3]))
"#;
    let rhai = r#"
let data = [];
for i in 1..=200 { data.push(i); }
let k = 3;
let pool = Pool(3, #{mode: "gil"});
let r = pool.map(|j| { let s = 0; for n in 0..60 { s += data.map(|x| x + k).len(); } s + j }, [1, 2, 3], 1);
print(`pool ${r[0]} ${r[1]} ${r[2]}`);
"#;
    both_in_modes(&["fork"], "gil_option", lua, rhai, |_, out| {
        out.assert_success();
        assert_eq!(
            out.stdout_value("pool"),
            "12001 12002 12003",
            "{}",
            out.describe()
        );
    });
}

/// A script's error is printed when its code ends, before the run waits for the threads and
/// processes it started, as Python prints its traceback before it waits for its threads: it
/// was printed only once they had ended, so a thread that never ends hid it for ever. It is
/// printed once, and the status is still 1.
#[test]
fn a_script_error_is_printed_before_the_run_waits_for_its_threads() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let lua = r#"
local t = parrun.Thread(function() parrun.sleep(4) print("thread done") end, {})
t:start()
local p = parrun.Process(function() parrun.sleep(4) print("process done") end, {})
p:start()
error("boom")
"#;
    let rhai = r#"
let t = Thread(|| { sleep(4); print("thread done"); }, []);
t.start();
let p = Process(|| { sleep(4); print("process done"); }, []);
p.start();
throw "boom";
"#;
    let runs: Vec<_> = common::languages(lua, rhai)
        .into_iter()
        .map(|(ext, code)| {
            let code = code.to_owned();
            std::thread::spawn(move || {
                let dir = TempDir::new("errfirst");
                let path = dir.write(&format!("errfirst.{ext}"), &code);
                let started = Instant::now();
                let mut child = Command::new(common::parrun_bin())
                    .arg(&path)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
                let first = stderr.next().and_then(Result::ok).unwrap_or_default();
                let seen = started.elapsed();
                let rest: Vec<String> = stderr.map_while(Result::ok).collect();
                let status = child.wait().unwrap();
                let mut stdout = String::new();
                std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout)
                    .unwrap();
                (ext, first, seen, rest, status, stdout, started.elapsed())
            })
        })
        .collect();
    for run in runs {
        let (ext, first, seen, rest, status, stdout, took) = run.join().unwrap();
        assert!(took < common::TIMEOUT, "{ext}: the run took {took:?}");
        assert!(
            first.starts_with("parrun: ")
                && first.contains(&format!("errfirst.{ext}:6:"))
                && first.contains("boom"),
            "{ext}: {first:?}"
        );
        assert!(
            seen < Duration::from_secs(3),
            "{ext}: the error came after {seen:?}, when the threads had ended"
        );
        assert!(
            !rest.iter().any(|l| l.contains("boom")),
            "{ext}: the error was printed again: {rest:?}"
        );
        assert_eq!(status.code(), Some(1), "{ext}");
        let mut lines: Vec<&str> = stdout.lines().collect();
        lines.sort();
        assert_eq!(lines, ["process done", "thread done"], "{ext}");
    }
}

/// A `Process` on a thread (`gil`, `isolated`) whose target asks its own handle at once finds
/// it started: the handle said "cannot join a process before it is started" now and then (an
/// isolated engine runs without waiting for the GIL, before `start` had marked it; 13 to 49
/// of 200 here), which made a_thread_or_a_process_that_joins_itself_gets_an_error_not_a_hang
/// (above) flaky.
#[test]
fn a_process_on_a_thread_is_started_for_its_own_target() {
    both_in_modes(
        &["gil", "isolated"],
        "startedself",
        r#"
local bad = 0
for i = 1, 100 do
  local p
  p = parrun.Process(function()
    local ok, e = pcall(p.join, p)
    if e:find("before it is started") then error(e) end
  end)
  p:start() p:join()
  if p.exitcode ~= 0 then bad = bad + 1 end
end
print("bad", bad)
"#,
        r#"
let bad = 0;
for i in 1..=100 {
  let ph = [()];
  let p = Process(|| { try { ph[0].join(); } catch (e) { if e.contains("before it is started") { throw e; } } });
  ph[0] = p;
  p.start(); p.join();
  if p.exitcode != 0 { bad += 1; }
}
print(`bad	${bad}`);
"#,
        |mode, out| {
            out.assert_success();
            assert_eq!(out.stdout_lines(), ["bad\t0"], "{mode}: {}", out.describe());
        },
    );
}

/// A `daemon` thread (Python's `Thread(daemon=True)`) is stopped when the script ends, in a
/// wait on a queue, a sleep or a loop, quietly, where a thread without it is waited for: a
/// consumer that loops on `get` for ever kept the run alive (the option was unknown).
#[test]
fn daemon_threads_are_stopped_when_the_script_ends() {
    both_in_modes(
        &["fork"],
        "daemon_threads",
        r#"
local q = parrun.Queue()
local t = parrun.Thread(function() while true do print("got", q:get()) end end, {},
  {daemon = true, name = "consumer"})
t:start()
parrun.Thread(function() while true do end end, {}, {daemon = true}):start()
parrun.Thread(function() parrun.sleep(60) end, {}, {daemon = true}):start()
local plain = parrun.Thread(function() parrun.sleep(0.2) print("plain done") end)
plain:start()
q:put(1)
parrun.sleep(0.1)
print(t.name, t.daemon, plain.daemon)
"#,
        r#"
let q = Queue();
let t = Thread(|q| { loop { print(`got	${q.get()}`); } }, [q], #{daemon: true, name: "consumer"});
t.start();
Thread(|| { loop {} }, [], #{daemon: true}).start();
Thread(|| sleep(60), [], #{daemon: true}).start();
let plain = Thread(|| { sleep(0.2); print("plain done"); }, []);
plain.start();
q.put(1);
sleep(0.1);
print(`${t.name}	${t.daemon}	${plain.daemon}`);
"#,
        |_, out| {
            out.assert_success();
            assert_eq!(
                out.stdout_lines(),
                ["got\t1", "consumer\ttrue\tfalse", "plain done"],
                "{}",
                out.describe()
            );
            assert!(out.stderr.is_empty(), "{}", out.describe());
            assert!(
                out.elapsed < std::time::Duration::from_secs(10),
                "{}",
                out.describe()
            );
        },
    );
}

/// As the script ends, daemon threads run on until every other thread and process has ended,
/// and daemon processes are terminated before the others are waited for, whatever order they
/// started in, as Python's: a daemon server started before the client thread it serves was
/// stopped at once, and the client waited for ever; a child process waiting for a daemon
/// thread's message waited for ever; a daemon process started after another ran to its end.
/// ```python
/// server = threading.Thread(target=serve, daemon=True); server.start()   # answers req with 2x
/// threading.Thread(target=client).start()   # 3 requests, prints "client total 12"
/// multiprocessing.Process(target=slow).start()   # sleeps 1.2 s, prints "process done"
/// multiprocessing.Process(target=quick, daemon=True).start()   # would print after 1 s
/// ```
#[test]
fn daemons_serve_until_the_others_end_whatever_order_they_started_in() {
    both_in_modes(
        &MODES,
        "daemon_order",
        r#"
local req, rep = parrun.Queue(), parrun.Queue()
parrun.Thread(function()
  while true do rep:put(req:get() * 2) end
end, {}, {daemon = true}):start()
parrun.Thread(function()
  local total = 0
  for i = 1, 3 do parrun.sleep(0.05) req:put(i) total = total + rep:get() end
  print("client total", total)
end):start()
local mail = parrun.Queue()
parrun.Thread(function() parrun.sleep(0.3) mail:put("hello") end, {}, {daemon = true}):start()
parrun.Process(function() print("child got", mail:get()) end):start()
parrun.Process(function() parrun.sleep(1.2) print("process done") end):start()
parrun.Process(function() parrun.sleep(1) print("daemon process done") end, {},
  {daemon = true}):start()
print("main done")
"#,
        r#"
let req = Queue();
let rep = Queue();
Thread(|req, rep| { loop { rep.put(req.get() * 2); } }, [req, rep], #{daemon: true}).start();
Thread(|req, rep| {
  let total = 0;
  for i in 1..=3 { sleep(0.05); req.put(i); total += rep.get(); }
  print(`client total	${total}`);
}, [req, rep]).start();
let mail = Queue();
Thread(|mail| { sleep(0.3); mail.put("hello"); }, [mail], #{daemon: true}).start();
Process(|mail| print(`child got	${mail.get()}`), [mail]).start();
Process(|| { sleep(1.2); print("process done"); }).start();
Process(|| { sleep(1); print("daemon process done"); }, [], #{daemon: true}).start();
print("main done");
"#,
        |mode, out| {
            out.assert_success();
            let mut lines = out.stdout_lines();
            lines.sort();
            assert_eq!(
                lines,
                [
                    "child got\thello",
                    "client total\t12",
                    "main done",
                    "process done"
                ],
                "--mode {mode}: {}",
                out.describe()
            );
        },
    );
}

/// A thread made by a daemon thread is a daemon unless told otherwise, as Python's (`daemon`
/// defaults to the current thread's): a daemon consumer that starts a helper looping for ever
/// no longer keeps the run waiting for that helper (it did, for ever).
/// ```python
/// def daemon():
///     global inner, told
///     inner = threading.Thread(target=lambda: time.sleep(100)); inner.start()
///     told = threading.Thread(target=lambda: None, daemon=False)
///     time.sleep(100)
/// threading.Thread(target=daemon, daemon=True).start(); time.sleep(0.2)
/// print(inner.daemon, told.daemon, threading.Thread(target=print).daemon)  # True False False
/// ```
#[test]
fn a_thread_made_by_a_daemon_thread_is_a_daemon() {
    let lua = r#"
local inner, told
parrun.Thread(function()
  inner = parrun.Thread(function() while true do parrun.sleep(0.05) end end)
  inner:start()
  told = parrun.Thread(function() end, {}, {daemon = false})
  while true do parrun.sleep(0.05) end
end, {}, {daemon = true}):start()
parrun.sleep(0.2)
print(inner.daemon, told.daemon, parrun.Thread(print).daemon)
"#;
    let rhai = r#"
let made = [];
Thread(|| {
  let inner = Thread(|| { loop { sleep(0.05); } });
  inner.start();
  made.push(inner);
  made.push(Thread(|| (), [], #{daemon: false}));
  loop { sleep(0.05); }
}, [], #{daemon: true}).start();
sleep(0.2);
print(`${made[0].daemon}	${made[1].daemon}	${Thread(|| ()).daemon}`);
"#;
    for (ext, code) in common::languages(lua, rhai) {
        let (_dir, path) = common::script("daemon_inherit", ext, code);
        let out = Run::new([path.to_str().unwrap()])
            .timeout(std::time::Duration::from_secs(10))
            .output();
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["true\tfalse\tfalse"],
            "{}",
            out.describe()
        );
    }
}

/// `Thread.ident` and `native_id` are nil before `start`, set once it returns, kept after the
/// end, and equal `get_ident()` / `get_native_id()` inside the thread, as Python's; a
/// `Process`'s `ident` is its `pid` (nil before `start`), in every mode.
#[test]
fn thread_and_process_ids_follow_python() {
    let lua = r#"
local q = parrun.Queue()
local t = parrun.Thread(function() parrun.sleep(0.05) q:put({parrun.get_ident(), parrun.get_native_id()}) end)
print("before", t.ident, t.native_id, t:is_alive(), t.daemon, t.name)
t:start()
print("started", t.ident ~= nil, t.native_id ~= nil, t:is_alive())
t:join()
local got = q:get()
print("joined", t.ident == got[1], t.native_id == got[2], t:is_alive(), t.ident ~= parrun.get_ident(), t.native_id ~= parrun.get_native_id())
print("main", math.type(parrun.get_ident()), math.type(parrun.get_native_id()))
local p = parrun.Process(function() end)
print("p before", p.ident, p.pid, p.exitcode, p.daemon, p.name, p:is_alive())
p:start()
print("p started", p.ident == p.pid, p.ident ~= nil)
p:join()
print("p joined", p.ident == p.pid, p.exitcode, p:is_alive())
"#;
    let rhai = r#"
let q = Queue();
let t = Thread(|| { sleep(0.05); q.put([get_ident(), get_native_id()]); });
print(`before ${t.ident} ${t.native_id} ${t.is_alive()} ${t.daemon} ${t.name}`);
t.start();
print(`started ${t.ident != ()} ${t.native_id != ()} ${t.is_alive()}`);
t.join();
let got = q.get();
print(`joined ${t.ident == got[0]} ${t.native_id == got[1]} ${t.is_alive()} ${t.ident != get_ident()} ${t.native_id != get_native_id()}`);
print(`main ${type_of(get_ident())} ${type_of(get_native_id())}`);
let p = Process(|| {});
print(`p before ${p.ident} ${p.pid} ${p.exitcode} ${p.daemon} ${p.name} ${p.is_alive()}`);
p.start();
print(`p started ${p.ident == p.pid} ${p.ident != ()}`);
p.join();
print(`p joined ${p.ident == p.pid} ${p.exitcode} ${p.is_alive()}`);
"#;
    both_in_modes(&MODES, "ids", lua, rhai, |mode, out| {
        out.assert_success();
        let words: Vec<String> = out
            .stdout_lines()
            .iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        // Lua prints nil where Rhai prints nothing.
        let words: Vec<String> = words.iter().map(|l| l.replace("nil ", "")).collect();
        assert_eq!(
            words,
            [
                "before false false Thread-1",
                "started true true true",
                "joined true true false true true",
                words[3].as_str(),
                "p before false Process-1 false",
                "p started true true",
                "p joined true 0 false",
            ],
            "{mode}: {}",
            out.describe()
        );
        assert!(
            ["main integer integer", "main i64 i64"].contains(&words[3].as_str()),
            "{mode}"
        );
    });
}

/// A thread's (and a process's) `daemon` and `name` are set by assignment before `start`, as
/// in Python: a daemon thread set so does not keep the run waiting; `daemon` after `start`
/// is Python's error, a `name` may change at any time.
#[test]
fn daemon_and_name_are_set_by_assignment_before_start() {
    both_in_modes(
        &MODES,
        "setters",
        r#"
local t = parrun.Thread(function() parrun.sleep(60) end)
t.daemon = true
t.name = "sleeper"
print("before", t.name, t.daemon)
t:start()
print("after", select(2, pcall(function() t.daemon = false end)))
t.name = "renamed"
print("renamed", t.name, t.daemon)
print("read-only", select(2, pcall(function() t.ident = 1 end)))
local p = parrun.Process(function() parrun.sleep(60) end)
p.daemon = true
p.name = "P"
p:start()
print("process", p.name, p.daemon, select(2, pcall(function() p.daemon = false end)))
"#,
        r#"
let t = Thread(|| sleep(60));
t.daemon = true;
t.name = "sleeper";
print(`before ${t.name} ${t.daemon}`);
t.start();
try { t.daemon = false; } catch (e) { print(`after ${e}`); }
t.name = "renamed";
print(`renamed ${t.name} ${t.daemon}`);
try { t.ident = 1; } catch (e) { print("read-only Thread.ident: is read-only"); }
let p = Process(|| sleep(60));
p.daemon = true;
p.name = "P";
p.start();
try { p.daemon = false; } catch (e) { print(`process ${p.name} ${p.daemon} ${e}`); }
"#,
        |mode, out| {
            out.assert_success();
            // Neither the daemon thread nor the daemon process kept the run for its minute.
            assert!(
                out.elapsed < std::time::Duration::from_secs(20),
                "{mode}: {}",
                out.describe()
            );
            // A Lua error names the assignment's line: `/tmp/.../setters.lua:7: ` goes.
            let unplaced = |l: &str| match (l.find('/'), l.find("setters.lua:")) {
                (Some(start), Some(at)) => {
                    let end = at + l[at..].find(": ").expect("a line number") + 2;
                    format!("{}{}", &l[..start], &l[end..])
                }
                _ => l.to_owned(),
            };
            let lines: Vec<String> = out
                .stdout_lines()
                .iter()
                .map(|l| unplaced(&l.replace('\t', " ")))
                .collect();
            assert_eq!(
                lines,
                [
                    "before sleeper true",
                    "after Thread.daemon: cannot set daemon status of active thread (RuntimeError)",
                    "renamed renamed true",
                    "read-only Thread.ident: is read-only",
                    "process P true Process.daemon: process has already started (AssertionError)",
                ],
                "{mode}: {}",
                out.describe()
            );
        },
    );
}

/// Default names as Python gives them: `Thread-N (f)` with the target's name where it has one
/// (a Lua global function, a Rhai `fn`), `Thread-N` for an anonymous one, numbered only when
/// unnamed; `Process-N`.
/// ```python
/// import threading, multiprocessing as mp
/// def worker(): pass
/// print(threading.Thread(target=worker).name, threading.Thread(target=worker, name="named").name,
///       threading.Thread(target=lambda: 0).name, mp.Process(target=worker).name)
/// ```
/// (Python prints `Thread-2 (<lambda>)` for the lambda: parrun has no name for it.)
#[test]
fn default_names_are_pythons() {
    both_in_modes(
        &MODES,
        "names",
        r#"
function worker() end
local a, b = parrun.Thread(worker), parrun.Thread(worker, {}, "named")
local c, p = parrun.Thread(function() end), parrun.Process(worker)
print(a.name, b.name, c.name, p.name)
"#,
        r#"
fn worker() {}
let a = Thread(worker); let b = Thread(worker, [], "named");
let c = Thread(|| ()); let p = Process(worker);
print(`${a.name}	${b.name}	${c.name}	${p.name}`);
"#,
        |mode, out| {
            out.assert_success();
            assert_eq!(
                out.stdout_lines(),
                ["Thread-1 (worker)\tnamed\tThread-2\tProcess-1"],
                "{mode}: {}",
                out.describe()
            );
        },
    );
}

/// A thread reading the script's locals after the main script died of an error Lua itself
/// raised (indexing nil, arithmetic on a table, calling nil) reads what they held: the first
/// local of the frame that raised it (the usual `local P = parrun`) read as the error's text
/// instead, so the threads still running failed with "attempt to call a nil value (field
/// 'sleep')" after the script's own error, in every mode (in `gil` a `Process` too). The
/// dead coroutine's stack had been set back to that frame's base (mlua's guard) and the
/// error text, pushed there for `lua_closethread`, landed on the local its upvalue still
/// pointed at. An `error(...)` call was not hit (its frame is a C function's).
#[test]
fn threads_read_the_scripts_locals_after_it_died_of_a_lua_error() {
    let lua = r#"
local P = parrun
local a, b = "one", 2
local t = P.Thread(function()
  P.sleep(0.2)
  print("thread sees", a, b, type(P.sleep))
end, {})
t:start()
local x = nil
print(x.field)
"#;
    let rhai = r#"
let a = "one"; let b = 2;
let t = Thread(|| { sleep(0.2); print(`thread sees	${a}	${b}	function`); }, []);
t.start();
let x = ();
print(x.field);
"#;
    common::both("locals", lua, rhai, |out| {
        out.assert_code(1)
            .assert_stderr_contains("parrun: ")
            .assert_stdout_contains("thread sees\tone\t2\tfunction");
        assert!(
            !out.stderr.contains("Exception in thread"),
            "{}",
            out.describe()
        );
    });
}

/// `current_thread()` where no `Thread` was started (the script's main thread) is a running
/// thread that cannot be started again, nor joined: by itself as Python says ("cannot join
/// current thread"), and by another thread with an error where Python's join would wait for
/// the end of the process, which waits for that thread.
#[test]
fn the_main_thread_can_be_neither_started_nor_joined() {
    let lua = r#"
local main = parrun.current_thread()
print(main.name, main:is_alive(), main.daemon)
print(pcall(function() main:start() end))
print(pcall(function() main:join() end))
local t = parrun.Thread(function() print(pcall(function() main:join() end)) end)
t:start() t:join()
print(pcall(function() main.daemon = true end))
"#;
    let rhai = r#"
let main = current_thread();
print(`${main.name} ${main.is_alive()} ${main.daemon}`);
try { main.start(); print("started"); } catch (e) { print(`false ${e}`); }
try { main.join(); print("joined"); } catch (e) { print(`false ${e}`); }
let t = Thread(|| { try { main.join(); print("joined"); } catch (e) { print(`false ${e}`); } });
t.start(); t.join();
try { main.daemon = true; print("set"); } catch (e) { print(`false ${e}`); }
"#;
    both_in_modes(&MODES, "mainthread", lua, rhai, |mode, out| {
        out.assert_success();
        let lines = out.stdout_lines();
        let text = |i: usize| lines[i].replace('\t', " ");
        assert_eq!(
            text(0),
            "MainThread true false",
            "{mode}: {}",
            out.describe()
        );
        let expected = [
            "threads can only be started once",
            "cannot join current thread",
            "MainThread is the first thread of its process, which ends last",
            "cannot set daemon status of active thread",
        ];
        for (i, part) in expected.iter().enumerate() {
            let line = text(i + 1);
            assert!(
                line.starts_with("false") && line.contains(part),
                "{mode}: line {}: {line}: {}",
                i + 1,
                out.describe()
            );
        }
    });
}

/// A Rhai object is a handle: its properties can be set through a constant or a variable a
/// closure has captured (both read-only to Rhai), as its methods are called through them. The
/// setter said "Cannot modify property 'name' of constant".
#[test]
fn rhai_sets_properties_through_constants_and_captured_variables() {
    let code = r#"
const T = Thread(|| 1);
T.name = "constant";
fn rename() { global::T.name = "in a function"; }
print(T.name);
rename();
print(T.name);
let t = Thread(|| 1);
let peek = || t.name;
t.name = "captured";
t.daemon = true;
print(`${peek.call()} ${t.daemon}`);
"#;
    let out = run_main(Lang::Rhai, code);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        ["constant", "in a function", "captured true"],
        "{}",
        out.describe()
    );
}

/// A coroutine one thread is running cannot be resumed or closed by another while that
/// thread waits in it or has handed the GIL over, when Lua itself reads it as suspended: it
/// is "running" (as a Python generator another thread runs is "already executing"). Before,
/// the other thread's `resume` went through (the yields reached the wrong caller) and a
/// `close` of the script's own coroutine ended the script with "coroutine is non-resumable".
/// Once the runner is done with it, it is suspended again and resumes as usual.
#[test]
fn a_coroutine_running_on_one_thread_is_not_resumed_by_another() {
    let lua = r#"
local P = parrun
local co = coroutine.create(function()
  P.sleep(0.4)
  coroutine.yield("first")
  return "done"
end)
local got
local t = P.Thread(function() got = {coroutine.resume(co)} end, {})
t:start()
P.sleep(0.1)
print("waiting", coroutine.status(co), coroutine.resume(co))
print("close", pcall(coroutine.close, co))
-- Spins until the script has looked: a fixed count ended first on a loaded machine.
local looked = false
local spin = coroutine.create(function()
  local x = 0
  while not looked do x = x + 1 end
  return x
end)
local w = coroutine.wrap(function() P.sleep(0.4) return 1 end)
local t2 = P.Thread(function() coroutine.resume(spin) end, {})
local t3 = P.Thread(function() w() end, {})
t2:start() t3:start()
P.sleep(0.1)
print("spinning", coroutine.status(spin), coroutine.resume(spin))
looked = true
print("wrap", pcall(w))
t:join() t2:join() t3:join()
print("after", got[1], got[2], coroutine.status(co), coroutine.resume(co))
print("spun", coroutine.status(spin))
local main = coroutine.running()
local t4 = P.Thread(function()
  print("main", coroutine.status(main), coroutine.resume(main))
  print("close main", pcall(coroutine.close, main))
end, {})
t4:start() t4:join()
print("end")
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "shared_co", "lua", lua);
        out.assert_success();
        let refused = "false\tcannot resume non-suspended coroutine";
        assert_eq!(
            out.stdout_lines(),
            [
                format!("waiting\trunning\t{refused}").as_str(),
                "close\tfalse\tcannot close a running coroutine",
                &format!("spinning\trunning\t{refused}"),
                "wrap\tfalse\tcannot resume non-suspended coroutine",
                "after\ttrue\tfirst\tsuspended\ttrue\tdone",
                "spun\tdead",
                &format!("main\trunning\t{refused}"),
                "close main\tfalse\tcannot close a running coroutine",
                "end",
            ],
            "{mode}: {}",
            out.describe()
        );
    }
}

/// Lua's blocking I/O lets the other threads run, as CPython releases its GIL around a read
/// or `os.system`: a thread in `os.execute`, in a read of a pipe (`io.popen`'s `read`, its
/// `lines`) waits with the GIL released, so the main thread creates the files the commands
/// wait for. They held the GIL: the main thread never ran until each command gave up (3 s
/// here), and the threads saw nothing.
#[test]
fn blocking_reads_and_commands_let_other_threads_run() {
    let lua = r#"
local P = parrun
local base = os.tmpname()
local function wait_for(flag)
  return ("i=0; while [ ! -e %s ] && [ $i -lt 300 ]; do sleep 0.01; i=$((i+1)); done; [ -e %s ]")
    :format(flag, flag)
end
local seen = {}
local threads = {
  P.Thread(function() seen.execute = os.execute(wait_for(base .. ".a")) end),
  P.Thread(function()
    local p = io.popen(wait_for(base .. ".b") .. " && echo seen")
    seen.read = p:read("l")
    p:close()
  end),
  P.Thread(function()
    local p = io.popen(wait_for(base .. ".c") .. " && echo seen")
    for line in p:lines() do seen.lines = line end
    p:close()
  end),
}
for _, t in ipairs(threads) do t:start() end
P.sleep(0.1)
for _, s in ipairs{".a", ".b", ".c"} do io.open(base .. s, "w"):close() end
for _, t in ipairs(threads) do t:join() end
for _, s in ipairs{"", ".a", ".b", ".c"} do os.remove(base .. s) end
print(seen.execute, seen.read, seen.lines)
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "blocking_io", "lua", lua);
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["true\tseen\tseen"],
            "{mode}: {}",
            out.describe()
        );
    }
}
