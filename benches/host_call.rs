//! What a host function costs a script: the same loop calling a Rust function registered with
//! `Runtime::function`, with a plain mlua `create_function`, and with a plain Rhai
//! `register_fn`, run alternately in one process, reporting nanoseconds per call as medians.
//!
//! `cargo bench --bench host_call` (set `PARRUN_BENCH_RUNS` for the repeat count, default 5).
//!
//! Each script times its own loops with the engine's clock, so start-up is not counted: a loop
//! that calls `inc(i)` and the same loop with `i + 1` in its place; the difference over the
//! count is the cost of one call (argument and result conversion included).

use parrun::{Language, Runtime};

const LUA_CALLS: u32 = 2_000_000;
const RHAI_CALLS: u32 = 500_000;

/// Lua: prints nothing, returns the ns per call; `clock` is a function giving seconds.
fn lua_script(clock: &str) -> String {
    format!(
        "local clock = {clock}
         local n, s = {LUA_CALLS}, 0
         local t0 = clock()
         for i = 1, n do s = s + inc(i) end
         local t1 = clock()
         for i = 1, n do s = s + (i + 1) end
         local t2 = clock()
         assert(s > 0)
         return ((t1 - t0) - (t2 - t1)) / n * 1e9"
    )
}

fn rhai_script() -> String {
    format!(
        "let n = {RHAI_CALLS}; let s = 0;
         let t0 = timestamp();
         for i in 0..n {{ s += inc(i); }}
         let e1 = t0.elapsed;
         let t1 = timestamp();
         for i in 0..n {{ s += i + 1; }}
         let e2 = t1.elapsed;
         if s <= 0 {{ throw \"bad\"; }}
         (e1 - e2) / n.to_float() * 1e9"
    )
}

fn parrun_runtime() -> Runtime {
    Runtime::new().function("inc", |(x,): (i64,)| Ok::<_, String>(x + 1))
}

fn parrun_lua() -> f64 {
    parrun_runtime()
        .eval(Language::Lua, "host_call.lua", lua_script("os.clock"))
        .expect("parrun lua")
}

fn parrun_rhai() -> f64 {
    parrun_runtime()
        .eval(Language::Rhai, "host_call.rhai", rhai_script())
        .expect("parrun rhai")
}

fn bare_lua() -> f64 {
    let lua = mlua::Lua::new();
    let inc = lua
        .create_function(|_, x: i64| Ok(x + 1))
        .expect("create_function");
    lua.globals().set("inc", inc).expect("set inc");
    lua.load(lua_script("os.clock")).eval().expect("bare lua")
}

fn bare_rhai() -> f64 {
    let mut engine = rhai::Engine::new();
    engine.register_fn("inc", |x: i64| x + 1);
    engine.eval::<f64>(&rhai_script()).expect("bare rhai")
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn range(xs: &[f64]) -> (f64, f64) {
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

fn compare(name: &str, runs: usize, bare: fn() -> f64, parrun: fn() -> f64) {
    bare();
    parrun();
    let (mut b, mut p) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        b.push(bare());
        p.push(parrun());
    }
    let ((bmin, bmax), (pmin, pmax)) = (range(&b), range(&p));
    let (b, p) = (median(b), median(p));
    println!(
        "{name:5} bare engine {b:7.1} ns/call ({bmin:.1}-{bmax:.1})   parrun::Runtime::function {p:7.1} ns/call ({pmin:.1}-{pmax:.1})   ratio {:.2}   (medians of {runs})",
        p / b
    );
}

fn main() {
    let runs = std::env::var("PARRUN_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    compare("lua", runs, bare_lua, parrun_lua);
    compare("rhai", runs, bare_rhai, parrun_rhai);
}
