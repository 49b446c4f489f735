//! The cost of a map from Rust next to the script's own `pool.map`: `Script::map` of a function
//! that doubles its argument over 100,000 integers, and the same function mapped by the script
//! over the same list, in both languages and every execution model; ns per item, median of 5.
//! Both sides run on a warm pool (a first map before the timed ones), and the Rust side counts
//! its conversions (Rust values to the pool and back).
//!
//! `cargo bench --bench bench_map [-- ITEMS]`

use std::time::Instant;

use parrun::{Language, Mode, Runtime};

const LUA: &str = r#"
function double(x) return x * 2 end
-- The script's own map of `double` over 0..n-1, timed around the map alone.
function script_side(n, runs)
  local xs = {}
  for i = 1, n do xs[i] = i - 1 end
  local pool = parrun.Pool()
  pool:map(double, xs)
  local times = {}
  for r = 1, runs do
    local t0 = parrun.time()
    local out = pool:map(double, xs)
    times[r] = parrun.time() - t0
    assert(out[n] == 2 * (n - 1))
  end
  pool:terminate()
  return times
end
"#;

const RHAI: &str = r#"
fn double(x) { x * 2 }
// The script's own map of `double` over 0..n-1, timed around the map alone.
fn script_side(n, runs) {
  let xs = [];
  for i in 0..n { xs.push(i); }
  let pool = Pool();
  pool.map("double", xs);
  let times = [];
  for r in 0..runs {
    let t0 = time();
    let out = pool.map("double", xs);
    times.push(time() - t0);
    if out[n - 1] != 2 * (n - 1) { throw "wrong"; }
  }
  pool.terminate();
  times
}
"#;

const RUNS: usize = 5;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`.
    let items: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map_or(100_000, |n| n.parse().expect("ITEMS is a number"));
    let inputs: Vec<i64> = (0..items as i64).collect();
    println!("{items} integers, x * 2, ns per item, median of {RUNS}");
    println!(
        "{:<6} {:<9} {:>14} {:>16}",
        "lang", "mode", "Script::map", "script pool.map"
    );
    for (language, code) in [(Language::Lua, LUA), (Language::Rhai, RHAI)] {
        for mode in [Mode::Gil, Mode::Fork, Mode::Isolated] {
            let script = Runtime::new()
                .mode(mode)
                .load_source(language, "bench", code)
                .expect("the benchmark script loads");
            let warm: Vec<i64> = script.map("double", &inputs).unwrap();
            assert_eq!(warm[items - 1], 2 * (items as i64 - 1));
            let rust_side: Vec<f64> = (0..RUNS)
                .map(|_| {
                    let start = Instant::now();
                    let out: Vec<i64> = script.map("double", &inputs).unwrap();
                    let elapsed = start.elapsed().as_secs_f64();
                    assert_eq!(out.len(), items);
                    elapsed
                })
                .collect();
            let script_side: Vec<f64> = script.call("script_side", (items, RUNS)).unwrap();
            let per_item = |secs: f64| secs * 1e9 / items as f64;
            println!(
                "{:<6} {:<9} {:>14.1} {:>16.1}",
                format!("{language:?}").to_lowercase(),
                mode.name(),
                per_item(median(rust_side)),
                per_item(median(script_side)),
            );
        }
    }
}
