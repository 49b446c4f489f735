//! Runs every script in `scripts/` and `examples/` and checks what it prints, in both
//! languages. `every_script_has_a_test` fails when a file is added there without a test here.

mod common;

use common::{repo_root, run, Lang, Output, Run};

/// Every file under `scripts/` and `examples/` that a test below runs.
const TESTED: &[&str] = &[
    "scripts/experiment_a.lua",
    "scripts/experiment_a.rhai",
    "scripts/experiment_b.lua",
    "scripts/experiment_b.rhai",
    "scripts/pool_overhead.lua",
    "scripts/pool_overhead.rhai",
    "scripts/pool_costs.lua",
    "scripts/pool_costs.rhai",
    "scripts/fork_state.lua",
    "scripts/fork_state.rhai",
    "examples/threads.lua",
    "examples/threads.rhai",
    "examples/process_queue.lua",
    "examples/process_queue.rhai",
    "examples/squares.lua",
    "examples/squares.rhai",
    "examples/wordcount.lua",
    "examples/wordcount.rhai",
    "examples/philosophers.lua",
    "examples/philosophers.rhai",
    "examples/embed.rs",
];

#[test]
fn every_script_has_a_test() {
    let mut found = Vec::new();
    for dir in ["scripts", "examples"] {
        let entries = std::fs::read_dir(repo_root().join(dir))
            .unwrap_or_else(|e| panic!("cannot list {dir}/: {e}"));
        for entry in entries {
            let entry = entry.expect("a directory entry");
            if entry.file_type().expect("a file type").is_file() {
                found.push(format!("{dir}/{}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found.sort();
    let untested: Vec<_> = found
        .iter()
        .filter(|f| !TESTED.contains(&f.as_str()))
        .collect();
    assert!(
        untested.is_empty(),
        "these files have no test in tests/scripts.rs (add one and list them in TESTED): {untested:?}"
    );
    let missing: Vec<_> = TESTED
        .iter()
        .filter(|f| !found.iter().any(|g| g == *f))
        .collect();
    assert!(
        missing.is_empty(),
        "TESTED lists files that do not exist: {missing:?}"
    );
}

// ---- scripts/experiment_a ----

/// What experiment A prints for list length `n`: the sum of 0..n-1, four times.
fn expected_total(n: u64) -> u64 {
    4 * (n * n.saturating_sub(1) / 2)
}

/// A "NAME time: 0.123 s" value: three decimals and a unit.
#[track_caller]
fn assert_seconds(out: &Output, prefix: &str) -> f64 {
    let text = out.stdout_value(prefix);
    let number = text.strip_suffix(" s").unwrap_or_else(|| {
        panic!(
            "{prefix} {text:?} does not end in \" s\"\n{}",
            out.describe()
        )
    });
    let decimals = number.split_once('.').map_or(0, |(_, d)| d.len());
    assert_eq!(
        decimals,
        3,
        "{prefix} {text:?} should have 3 decimals\n{}",
        out.describe()
    );
    let secs: f64 = number.parse().expect("a number of seconds");
    assert!(secs >= 0.0, "{}", out.describe());
    secs
}

/// Runs experiment A in `lang` with list length `n` and checks every line it prints.
fn check_experiment_a(lang: Lang, n: Option<u64>) {
    let script = format!("scripts/{}", lang.file("experiment_a"));
    let mut args = vec![script];
    args.extend(n.map(|n| n.to_string()));
    let out = run(&args);
    out.assert_success();
    let total = expected_total(n.unwrap_or(1_000_000)).to_string();

    let lines = out.stdout_lines();
    let prefixes = [
        "serial total: ",
        "serial time: ",
        "threads total: ",
        "threads time: ",
        "threads/serial time ratio: ",
    ];
    assert_eq!(lines.len(), prefixes.len(), "{}", out.describe());
    for (line, prefix) in lines.iter().zip(prefixes) {
        assert!(
            line.starts_with(prefix),
            "expected {prefix:?}...\n{}",
            out.describe()
        );
    }
    assert_eq!(
        out.stdout_value("serial total:"),
        total,
        "{}",
        out.describe()
    );
    assert_eq!(
        out.stdout_value("threads total:"),
        total,
        "{}",
        out.describe()
    );
    assert_seconds(&out, "serial time:");
    assert_seconds(&out, "threads time:");
    let ratio = out.stdout_value("threads/serial time ratio:");
    let two_decimals = ratio.split_once('.').is_some_and(|(_, d)| d.len() == 2);
    assert!(
        ratio == "n/a" || (two_decimals && ratio.parse::<f64>().is_ok()),
        "ratio {ratio:?} is neither n/a nor a number with 2 decimals\n{}",
        out.describe()
    );
    assert!(out.stderr.is_empty(), "{}", out.describe());
}

#[test]
fn experiment_a_lua_small() {
    check_experiment_a(Lang::Lua, Some(1000));
}

#[test]
fn experiment_a_rhai_small() {
    check_experiment_a(Lang::Rhai, Some(1000));
}

#[test]
fn experiment_a_tiny_and_empty_lists() {
    for lang in Lang::ALL {
        check_experiment_a(lang, Some(1));
        check_experiment_a(lang, Some(0));
        check_experiment_a(lang, Some(7));
    }
}

/// The full size, 1999998000000 in the totals. Lua takes a few seconds in a debug build.
#[test]
fn experiment_a_lua_default_size() {
    check_experiment_a(Lang::Lua, None);
}

/// The full size in Rhai (about 3 s in the debug build, whose dependencies are optimised).
#[test]
fn experiment_a_rhai_default_size() {
    check_experiment_a(Lang::Rhai, None);
}

#[test]
fn experiment_a_totals_fit_the_documented_value() {
    assert_eq!(expected_total(1_000_000), 1_999_998_000_000);
}

// ---- scripts/experiment_b ----

/// Experiment B's total for `n`: twice the sum of i * i for i in 0..n, exactly.
fn squares_total(n: u128) -> String {
    (2 * (0..n).map(|i| i * i).sum::<u128>()).to_string()
}

/// Runs experiment B with `n` and checks the three exact totals and the timing lines.
fn check_experiment_b(lang: Lang, n: Option<u128>) {
    let script = format!("scripts/{}", lang.file("experiment_b"));
    let mut args = vec![script];
    args.extend(n.map(|n| n.to_string()));
    let out = run(&args);
    out.assert_success();
    let total = squares_total(n.unwrap_or(10_000_000));
    assert_eq!(out.stdout_value("mode:"), "fork", "{}", out.describe());
    for name in ["serial", "processes", "threads", "isolated threads"] {
        assert_eq!(
            out.stdout_value(&format!("{name} total:")),
            total,
            "{name} ({lang:?})\n{}",
            out.describe()
        );
        let time = out.stdout_value(&format!("{name} time:"));
        let secs = time.strip_suffix(" s").and_then(|t| t.parse::<f64>().ok());
        assert!(
            secs.is_some_and(|s| s >= 0.0),
            "{name} time {time:?}\n{}",
            out.describe()
        );
    }
    for name in [
        "processes speedup:",
        "threads speedup:",
        "isolated threads speedup:",
    ] {
        let speedup = out.stdout_value(name);
        // A tiny N can time the serial run as 0.000 s, so 0.00x is a fair answer.
        let x = speedup
            .strip_suffix('x')
            .and_then(|t| t.parse::<f64>().ok());
        assert!(
            x.is_some_and(|x| x >= 0.0),
            "{name} {speedup:?}\n{}",
            out.describe()
        );
    }
    assert_eq!(out.stdout_lines().len(), 12, "{}", out.describe());
}

/// 150,000 makes each partial sum pass 10^15, so both limb carries are exercised.
#[test]
fn experiment_b_lua_small() {
    check_experiment_b(Lang::Lua, Some(10));
    check_experiment_b(Lang::Lua, Some(150_000));
}

#[test]
fn experiment_b_rhai_small() {
    check_experiment_b(Lang::Rhai, Some(10));
    check_experiment_b(Lang::Rhai, Some(150_000));
}

/// The documented full size: 2 * 333333283333335000000, past 64 bits.
#[test]
fn experiment_b_lua_default_size() {
    assert_eq!(squares_total(10_000_000), "666666566666670000000");
    check_experiment_b(Lang::Lua, None);
}

// ---- scripts/pool_overhead ----

#[test]
fn pool_overhead() {
    for lang in Lang::ALL {
        let out = run([
            format!("scripts/{}", lang.file("pool_overhead")),
            "500".into(),
        ]);
        out.assert_success();
        let lines = out.stdout_lines();
        assert_eq!(lines.len(), 3, "{}", out.describe());
        assert_eq!(lines[0], "mode: fork", "{}", out.describe());
        for (line, name) in lines[1..]
            .iter()
            .zip(["map default chunks", "map chunksize 1"])
        {
            let prefix = format!("{name}: 500 tasks, results ok, ");
            assert!(
                line.starts_with(&prefix),
                "expected {prefix:?}...\n{}",
                out.describe()
            );
            assert!(line.ends_with(" tasks/s"), "{}", out.describe());
        }
    }
}

// ---- scripts/pool_costs and scripts/fork_state (issue 15's table, for `parrun bench`) ----

/// The languages to run a script in: Rhai alone on the grain pass.
fn script_langs() -> Vec<Lang> {
    if common::grain_pass() {
        vec![Lang::Rhai]
    } else {
        Lang::ALL.to_vec()
    }
}

/// The figure a `NAME: ... s` or `NAME: ... MB` line gives, checked to be a number.
fn figure(out: &Output, line: &str, unit: &str) -> f64 {
    let (_, value) = line.split_once(": ").expect("a figure line");
    let value = value
        .strip_suffix(unit)
        .unwrap_or_else(|| panic!("{line:?} does not end in {unit:?}\n{}", out.describe()));
    value
        .parse()
        .unwrap_or_else(|e| panic!("{line:?}: {e}\n{}", out.describe()))
}

#[test]
fn pool_costs() {
    for lang in script_langs() {
        for mode in common::MODES {
            let script = format!("scripts/{}", lang.file("pool_costs"));
            let out = run(["--mode", mode, &script, "300"]);
            out.assert_success();
            let lines = out.stdout_lines();
            assert_eq!(lines.len(), 5, "{}", out.describe());
            assert_eq!(lines[0], format!("mode: {mode}"), "{}", out.describe());
            assert!(
                lines[1].starts_with("pool start time: "),
                "{}",
                out.describe()
            );
            let start = figure(&out, lines[1], " s");
            assert!(start > 0.0 && start < 10.0, "{}", out.describe());
            for (line, name) in lines[2..5].iter().zip([
                "map default chunks incl. start",
                "map chunksize 1",
                "apply_async",
            ]) {
                let prefix = format!("{name}: 300 tasks, results ok, ");
                assert!(
                    line.starts_with(&prefix),
                    "{prefix:?}...\n{}",
                    out.describe()
                );
                assert!(line.ends_with(" tasks/s"), "{}", out.describe());
            }
        }
    }
}

#[test]
fn fork_state() {
    for lang in script_langs() {
        for mode in common::MODES {
            let script = format!("scripts/{}", lang.file("fork_state"));
            let out = run(["--mode", mode, &script, "2000"]);
            out.assert_success();
            let lines = out.stdout_lines();
            assert_eq!(lines[0], format!("mode: {mode}"), "{}", out.describe());
            // Memory only where a worker is a process of its own and the script can read
            // /proc (Lua); the isolated pool's creation only in isolated.
            let memory = mode == "fork" && lang == Lang::Lua;
            let mut expected = Vec::new();
            if memory {
                expected.push("idle worker memory");
            }
            expected.push("big table build time");
            if memory {
                expected.push("inherited table private memory");
            }
            if mode == "isolated" {
                expected.push("isolated pool create with a big global time");
            }
            expected.extend([
                "first map with a global table time",
                "pool create with a big local time",
                "first map with a local upvalue table time",
                "map again with an unchanged local upvalue table time",
            ]);
            let figures: Vec<&str> = lines[1..]
                .iter()
                .copied()
                .filter(|l| !l.starts_with('('))
                .collect();
            let names: Vec<&str> = figures
                .iter()
                .map(|l| l.split_once(": ").map_or(*l, |(n, _)| n))
                .collect();
            assert_eq!(names, expected, "{}", out.describe());
            for line in figures {
                let unit = if line.contains(" memory: ") {
                    " MB"
                } else {
                    " s"
                };
                let value = figure(&out, line, unit);
                assert!(value > 0.0, "{line}\n{}", out.describe());
            }
        }
    }
}

// ---- examples/threads ----

const THREADS_EXAMPLE_OUTPUT: &str = "\
1 squared is 1
2 squared is 4
3 squared is 9
4 squared is 16
5 squared is 25
6 squared is 36
7 squared is 49
8 squared is 64
9 squared is 81
10 squared is 100
10 jobs done by 3 workers, sum of squares 385
";

fn check_threads_example(lang: Lang) {
    let out = run([format!("examples/{}", lang.file("threads"))]);
    out.assert_success();
    assert_eq!(out.stdout, THREADS_EXAMPLE_OUTPUT, "{}", out.describe());
    assert!(out.stderr.is_empty(), "{}", out.describe());
}

#[test]
fn threads_example_lua() {
    check_threads_example(Lang::Lua);
}

#[test]
fn threads_example_rhai() {
    check_threads_example(Lang::Rhai);
}

/// The example is deterministic: a few more runs print the same, with a short switch interval
/// to shuffle the workers' order.
#[test]
fn threads_example_is_deterministic() {
    for lang in Lang::ALL {
        for _ in 0..3 {
            let script = format!("examples/{}", lang.file("threads"));
            let out = run(["--switch-interval", "1", script.as_str()]);
            out.assert_success();
            assert_eq!(out.stdout, THREADS_EXAMPLE_OUTPUT, "{}", out.describe());
        }
    }
}

// ---- examples/philosophers ----

/// Every philosopher eats every meal, with either cure, and every fork is free at the end (the
/// default 20 meals: a deadlock would hang, and the runner's timeout fails it).
#[test]
fn philosophers_example() {
    let mut want = String::new();
    for way in ["ordered", "polite"] {
        for id in 1..=5 {
            want.push_str(&format!("{way}: philosopher {id} ate 20 meals\n"));
        }
        want.push_str(&format!("{way}: every fork is back on the table: true\n"));
    }
    for lang in Lang::ALL {
        let out = run([format!("examples/{}", lang.file("philosophers"))]);
        out.assert_success();
        assert_eq!(out.stdout, want, "{}", out.describe());
        assert!(out.stderr.is_empty(), "{}", out.describe());
    }
}

// ---- examples/process_queue ----

#[test]
fn process_queue_example() {
    for lang in Lang::ALL {
        let out = run([format!("examples/{}", lang.file("process_queue"))]);
        out.assert_success();
        assert_eq!(out.stdout, "13\n", "{}", out.describe());
    }
}

// ---- examples/squares ----

/// Runs the pool example with short sleeps and checks its three parts: the workers' start /
/// finish lines, the apply_async results in order, and the map result.
fn check_squares_example(lang: Lang) {
    let script = format!("examples/{}", lang.file("squares"));
    let out = run([script.as_str(), "0.05"]);
    out.assert_success();
    let lines = out.stdout_lines();
    let squares: Vec<String> = (0..10).map(|n: u32| (n * n).to_string()).collect();

    // Part 1: 10 tasks, each a "started" then a "finished" line from one worker.
    let (part1, rest) = lines.split_at(20.min(lines.len()));
    check_worker_lines(&out, part1);
    // Part 2: apply_async results, in submission order.
    assert!(rest.len() >= 10, "{}", out.describe());
    let (part2, rest) = rest.split_at(10);
    assert_eq!(part2, squares, "{}", out.describe());
    // Part 3: map's 10 tasks, then the list in input order.
    assert_eq!(rest.len(), 21, "{}", out.describe());
    check_worker_lines(&out, &rest[..20]);
    assert_eq!(
        rest[20],
        format!("[{}]", squares.join(", ")),
        "{}",
        out.describe()
    );
}

/// 20 lines `process id: PID started|finished`: each worker runs one task at a time, so per
/// pid the lines alternate started / finished; at most one worker per core.
#[track_caller]
fn check_worker_lines(out: &Output, lines: &[&str]) {
    let mut by_pid: std::collections::BTreeMap<u32, Vec<&str>> = Default::default();
    for line in lines {
        let (pid, what) = line
            .strip_prefix("process id: ")
            .and_then(|l| l.split_once(' '))
            .unwrap_or_else(|| panic!("unexpected line {line:?}\n{}", out.describe()));
        let pid: u32 = pid.parse().expect("a pid");
        by_pid.entry(pid).or_default().push(what);
    }
    for (pid, events) in &by_pid {
        let expected: Vec<&str> = ["started", "finished"]
            .iter()
            .cycle()
            .take(events.len())
            .copied()
            .collect();
        assert_eq!(
            *events,
            expected,
            "worker {pid} did not alternate started/finished\n{}",
            out.describe()
        );
        assert!(events.len() % 2 == 0, "{}", out.describe());
    }
    let started: usize = by_pid.values().map(|e| e.len() / 2).sum();
    assert_eq!(started, 10, "{}", out.describe());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        by_pid.len() <= cores,
        "{} workers on {cores} cores\n{}",
        by_pid.len(),
        out.describe()
    );
}

#[test]
fn squares_example_lua() {
    check_squares_example(Lang::Lua);
}

/// `square` reads the script's constant `global::MAX_SLEEP` inside a Pool worker.
#[test]
fn squares_example_rhai() {
    check_squares_example(Lang::Rhai);
}

// ---- examples/embed.rs (and the scripts it loads, examples/embed/) ----

/// The example binary `cargo test` builds beside the test binaries (built here when only this
/// test binary was asked for).
fn example_bin(name: &str) -> std::path::PathBuf {
    let profile_dir = std::env::current_exe()
        .expect("the test binary's path")
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/PROFILE/deps")
        .to_owned();
    let bin = profile_dir.join("examples").join(name);
    if !bin.exists() {
        let mut build = std::process::Command::new(env!("CARGO"));
        build
            .args(["build", "--example", name])
            .current_dir(repo_root());
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "cargo build --example {name} failed");
    }
    bin
}

/// The embedding example maps both transforms over its records in every model: six runs that
/// agree on every result, in order, then a failing record reported by index, file and line.
#[test]
fn embed_example_maps_in_every_model_and_names_a_failing_record() {
    let out = Run::new(["3000"]).program(example_bin("embed")).output();
    out.assert_success();
    let lines = out.stdout_lines();
    let runs: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("records/s"))
        .collect();
    assert_eq!(runs.len(), 6, "{}", out.describe());
    for (i, (file, mode)) in ["gil", "fork", "isolated"]
        .iter()
        .flat_map(|m| [("transform.lua", *m), ("transform.rhai", *m)])
        .enumerate()
    {
        let words: Vec<&str> = runs[i].split_whitespace().collect();
        assert_eq!((words[0], words[1]), (file, mode), "{}", out.describe());
    }
    // Every run's total and bands, as the example prints them, are the same.
    let tails: Vec<&str> = runs
        .iter()
        .map(|l| &l[l.find("total").unwrap()..])
        .collect();
    assert!(tails.windows(2).all(|w| w[0] == w[1]), "{}", out.describe());
    // 3000 records: the bands add up to all of them.
    let counted: usize = tails[0]
        .split(", ")
        .map(|band| band.rsplit(' ').next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(counted, 3000, "{}", out.describe());
    out.assert_stdout_contains("all 6 runs agree: yes\n")
        .assert_stdout_contains(
            "record 3 in an unknown currency: examples/embed/transform.lua:6: rate: no rate for XYZ\n",
        )
        .assert_stdout_contains(
            "record 3 in an unknown currency: examples/embed/transform.rhai:6: rate: no rate for XYZ\n",
        );
}

/// The README's script examples (its ```lua and ```rhai blocks) run as a new user would copy
/// them, in every mode, and print what their comments say (`--> 144` in Lua, `// 144` in Rhai),
/// in that order. A block without such a comment is a fragment (it uses a `pool` made
/// elsewhere) and is not run.
#[test]
fn the_readmes_script_examples_print_what_they_say() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let mut ran = 0;
    for (lang, marker) in [("lua", "-->"), ("rhai", "//")] {
        let fence = format!("```{lang}\n");
        for block in readme.split(&fence).skip(1) {
            let code = &block[..block.find("```").expect("a closing fence")];
            let wanted: Vec<&str> = code
                .lines()
                .filter(|l| l.trim_start().starts_with("print"))
                .filter_map(|l| l.split_once(marker).map(|(_, want)| want.trim()))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            for mode in common::MODES {
                let (_dir, path) = common::script("readme", lang, code);
                let out = Run::new(["--mode", mode, path.to_str().unwrap()]).output();
                out.assert_success();
                let lines = out.stdout_lines();
                let mut at = lines.iter();
                for want in &wanted {
                    assert!(
                        at.any(|line| line == want),
                        "--mode {mode}: the README's {lang} example does not print {want:?}\n{code}\n{}",
                        out.describe()
                    );
                }
            }
            ran += 1;
        }
    }
    assert!(ran >= 4, "only {ran} README examples found");
}

// ---- examples/wordcount ----

/// The word count prints every word with its count, most frequent first: the counts CPython
/// prints for the same text (the program in the Lua file's last comment), in both languages.
#[test]
fn wordcount_example() {
    let want = "delta\t6098\neta\t6013\nbeta\t6011\ngamma\t6011\nthéta\t6005\népsilon\t6003\nzeta\t5985\nalpha\t5874\n";
    for lang in Lang::ALL {
        let out = run([format!("examples/{}", lang.file("wordcount"))]);
        out.assert_success();
        assert_eq!(out.stdout, want, "{}", out.describe());
    }
}
