//! The same script in every execution model: each script in `scripts/` and `examples/` runs
//! under `--mode gil`, `--mode fork` and `--mode isolated`, in both languages, and must print
//! the same results as the fork run. Times, speedups, pids and the mode line differ by nature
//! and are left out of the comparison (see [`results`]); the mode line must name the mode.

mod common;

use common::{run, Lang, Output, MODES};

/// What a run printed that must not depend on the mode: every line except times, speedups,
/// rates, the mode line and workers' pid lines (which are counted instead).
fn results(out: &Output) -> Vec<String> {
    let mut kept = Vec::new();
    let mut pid_lines = 0;
    for line in out.stdout_lines() {
        if line.starts_with("process id: ") {
            pid_lines += 1;
        } else if line.starts_with("mode: ")
            || line.contains(" time: ")
            || line.contains("speedup: ")
            || line.contains("time ratio: ")
        {
            continue;
        } else if let Some((head, _rate)) = line.split_once(", results ok") {
            kept.push(format!("{head}, results ok"));
        } else {
            kept.push(line.to_string());
        }
    }
    kept.push(format!("({pid_lines} worker pid lines)"));
    kept
}

/// Runs `file` (with `args`) in every mode and language and compares each run's results with
/// the fork run's; returns the fork results of each language.
fn check_every_mode(file: &str, args: &[&str]) -> Vec<Vec<String>> {
    let mut per_lang = Vec::new();
    for lang in Lang::ALL {
        let script = format!("{}/{}", dir_of(file), lang.file(stem_of(file)));
        let mut reference: Option<(Vec<String>, Output)> = None;
        for mode in MODES {
            let mut argv = vec!["--mode", mode, script.as_str()];
            argv.extend(args);
            let out = run(&argv);
            out.assert_success();
            if out.stdout.contains("mode: ") {
                assert_eq!(out.stdout_value("mode:"), mode, "{}", out.describe());
            }
            let got = results(&out);
            match &reference {
                None => reference = Some((got, out)),
                Some((want, fork)) => assert_eq!(
                    &got,
                    want,
                    "{script}: --mode {mode} printed other results than --mode fork\n\
                     fork run:\n{}\n{mode} run:\n{}",
                    fork.describe(),
                    out.describe()
                ),
            }
        }
        per_lang.push(reference.expect("a fork run").0);
    }
    per_lang
}

#[test]
fn experiment_a_in_every_mode() {
    let results = check_every_mode("scripts/experiment_a", &["2000"]);
    assert!(results[0].iter().any(|l| l.starts_with("threads total: ")));
}

#[test]
fn experiment_b_in_every_mode() {
    let results = check_every_mode("scripts/experiment_b", &["150000"]);
    for lang in &results {
        let totals = lang.iter().filter(|l| l.contains(" total: ")).count();
        assert_eq!(totals, 4, "{lang:?}");
    }
}

#[test]
fn pool_overhead_in_every_mode() {
    let results = check_every_mode("scripts/pool_overhead", &["500"]);
    assert!(results[0][0].starts_with("map default chunks: 500 tasks"));
}

#[test]
fn threads_example_in_every_mode() {
    let results = check_every_mode("examples/threads", &[]);
    assert_eq!(results[0].len(), 12, "{:?}", results[0]);
}

#[test]
fn process_queue_example_in_every_mode() {
    let results = check_every_mode("examples/process_queue", &[]);
    assert_eq!(results[0][0], "13");
}

#[test]
fn squares_example_in_every_mode() {
    let results = check_every_mode("examples/squares", &["0.05"]);
    assert!(results[0].contains(&"[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]".to_string()));
    assert!(results[0].contains(&"(40 worker pid lines)".to_string()));
}

/// `mode()` reports `--mode`, and a pool's `mode` option overrides it for that pool.
#[test]
fn mode_is_readable_and_a_pool_picks_its_own() {
    for mode in MODES {
        let out = run([
            "--mode",
            mode,
            "--lang",
            "lua",
            "-e",
            r#"print(parrun.mode())
               local p = parrun.Pool(2, {mode = "isolated"})
               print(p:map(function(x) return x * 2 end, {1, 2, 3})[3])
               p:close(); p:join()"#,
        ]);
        out.assert_success();
        assert_eq!(out.stdout, format!("{mode}\n6\n"), "{}", out.describe());
    }
}

fn dir_of(file: &str) -> &str {
    file.rsplit_once('/').map_or(".", |(dir, _)| dir)
}

fn stem_of(file: &str) -> &str {
    file.rsplit_once('/').map_or(file, |(_, stem)| stem)
}
