//! What parrun's GIL costs a script with one thread: the same loop run by the bare engine
//! (no GIL, no parrun) and by `parrun::Runtime`, alternately, reporting medians and the ratio.
//!
//! `cargo bench --bench gil_overhead` (set `PARRUN_BENCH_RUNS` to change the repeat count).
//!
//! On a noisy machine wall time varies more than the difference measured; for a repeatable
//! figure count instructions instead: `PARRUN_BENCH_ONLY=lua-bare` (or `lua-parrun`,
//! `rhai-bare`, `rhai-parrun`) runs that one variant once, to compare under
//! `valgrind --tool=callgrind`.

use std::time::{Duration, Instant};

use parrun::{Language, Runtime};

const LUA_LOOP: &str = "local s = 0 for i = 1, 30000000 do s = s + i % 7 end assert(s > 0)";
const RHAI_LOOP: &str =
    "let s = 0; for i in 0..1000000 { s += i % 7; } if s <= 0 { throw \"bad\"; }";

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn time(f: impl Fn()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn compare(name: &str, runs: usize, bare: impl Fn(), parrun: impl Fn()) {
    bare();
    parrun();
    let (mut b, mut p) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        b.push(time(&bare));
        p.push(time(&parrun));
    }
    let (b, p) = (median(b), median(p));
    println!(
        "{name:5} bare engine {:8.3} s   parrun (GIL) {:8.3} s   ratio {:.3}   (medians of {runs})",
        b.as_secs_f64(),
        p.as_secs_f64(),
        p.as_secs_f64() / b.as_secs_f64()
    );
}

fn main() {
    let runs = std::env::var("PARRUN_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let runtime = Runtime::new();
    let lua_bare = || {
        let lua = unsafe { mlua::Lua::unsafe_new() };
        lua.load(LUA_LOOP).exec().unwrap();
    };
    let lua_parrun = || {
        let status = runtime.run_source(Language::Lua, "loop.lua", LUA_LOOP);
        assert_eq!(status.unwrap(), 0);
    };
    let rhai_bare = || rhai::Engine::new().run(RHAI_LOOP).unwrap();
    let rhai_parrun = || {
        let status = runtime.run_source(Language::Rhai, "loop.rhai", RHAI_LOOP);
        assert_eq!(status.unwrap(), 0);
    };
    match std::env::var("PARRUN_BENCH_ONLY").as_deref() {
        Ok("lua-bare") => return lua_bare(),
        Ok("lua-parrun") => return lua_parrun(),
        Ok("rhai-bare") => return rhai_bare(),
        Ok("rhai-parrun") => return rhai_parrun(),
        Ok(other) => panic!("unknown PARRUN_BENCH_ONLY={other}"),
        Err(_) => {}
    }
    compare("lua", runs, lua_bare, lua_parrun);
    compare("rhai", runs, rhai_bare, rhai_parrun);
}
