//! `parrun bench`: the built-in workloads at a thousandth of their size (one round), the
//! table's shape, the JSON's fields and the SVG; scripts of the user's; what a missing python3
//! and a wrong result do; and that a script named `bench` still runs.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Output, Run, TempDir};
use serde_json::Value as Json;

/// The row labels of the built-in workloads' configurations, in the table's order.
const PARRUN_RUNS: [&str; 6] = [
    "lua gil",
    "lua fork",
    "lua isolated",
    "rhai gil",
    "rhai fork",
    "rhai isolated",
];

/// Which configurations print a metric.
#[derive(Clone, Copy)]
enum Who {
    /// Every parrun configuration, and CPython's too if `true`.
    All(bool),
    /// Only these (CPython as `cpython`): the figure does not apply to the others.
    Only(&'static [&'static str]),
}

impl Who {
    /// The labels of the rows a table has for the metric, in order.
    fn labels(self, python: bool) -> Vec<&'static str> {
        let mut labels: Vec<&str> = match self {
            Who::All(_) => PARRUN_RUNS.to_vec(),
            Who::Only(labels) => labels.iter().copied().filter(|l| *l != "cpython").collect(),
        };
        let in_python = match self {
            Who::All(in_python) => in_python,
            Who::Only(labels) => labels.contains(&"cpython"),
        };
        if python && in_python {
            labels.push("cpython");
        }
        labels
    }
}

/// The metrics of each built-in workload, in the table's order, and who prints them.
const METRICS: [(&str, &[(&str, Who)]); 5] = [
    (
        "experiment_a",
        &[
            ("serial time (s)", Who::All(true)),
            ("threads time (s)", Who::All(true)),
        ],
    ),
    (
        "experiment_b",
        &[
            ("serial time (s)", Who::All(true)),
            ("processes time (s)", Who::All(true)),
            ("threads time (s)", Who::All(true)),
            ("isolated threads time (s)", Who::All(false)),
        ],
    ),
    (
        "pool_overhead",
        &[
            ("map default chunks (tasks/s)", Who::All(true)),
            ("map chunksize 1 (tasks/s)", Who::All(true)),
        ],
    ),
    (
        "pool_costs",
        &[
            ("pool start time (s)", Who::All(true)),
            ("map default chunks incl. start (tasks/s)", Who::All(true)),
            ("map chunksize 1 (tasks/s)", Who::All(true)),
            ("apply_async (tasks/s)", Who::All(true)),
        ],
    ),
    (
        "fork_state",
        &[
            // A worker's smaps_rollup: a forked one, from a script that can read /proc.
            (
                "idle worker memory (MB)",
                Who::Only(&["lua fork", "cpython"]),
            ),
            ("big table build time (s)", Who::All(true)),
            (
                "isolated pool create with a big global time (s)",
                Who::Only(&["lua isolated", "rhai isolated"]),
            ),
            (
                "inherited table private memory (MB)",
                Who::Only(&["lua fork", "cpython"]),
            ),
            ("first map with a global table time (s)", Who::All(true)),
            // CPython cannot pickle a closure.
            ("pool create with a big local time (s)", Who::All(false)),
            (
                "first map with a local upvalue table time (s)",
                Who::All(false),
            ),
            (
                "map again with an unchanged local upvalue table time (s)",
                Who::All(false),
            ),
        ],
    ),
];

fn has_python3() -> bool {
    Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn bench(args: &[&str]) -> Run {
    Run::new(std::iter::once("bench").chain(args.iter().copied()))
}

/// The sections of the table: each `## ` header with the lines under it, up to a blank line.
fn sections(out: &Output) -> Vec<(String, Vec<String>)> {
    let mut found: Vec<(String, Vec<String>)> = Vec::new();
    for line in out.stdout.lines() {
        if let Some(head) = line.strip_prefix("## ") {
            found.push((head.to_string(), Vec::new()));
        } else if !line.is_empty() {
            let (_, lines) = found
                .last_mut()
                .unwrap_or_else(|| panic!("a line before any header\n{}", out.describe()));
            lines.push(line.to_string());
        }
    }
    found
}

/// A row's cells after its metric: the run's label, then the figures.
fn cells<'a>(row: &'a str, metric: &str) -> (String, Vec<&'a str>) {
    let rest = row
        .strip_prefix(metric)
        .expect("the row starts with its metric");
    let words: Vec<&str> = rest.split_whitespace().collect();
    let label_words = if words[0] == "cpython" { 1 } else { 2 };
    (
        words[..label_words].join(" "),
        words[label_words..].to_vec(),
    )
}

#[test]
fn builtin_workloads_print_the_table_and_write_json_and_svg() {
    let python = has_python3();
    let dir = TempDir::new("bench");
    let json_path = dir.path().join("b.json");
    let svg_path = dir.path().join("b.svg");
    let (json_arg, svg_arg) = (json_path.to_str().unwrap(), svg_path.to_str().unwrap());
    let mut args = vec!["--repeat", "1", "--scale", "0.001"];
    args.extend(["--json", json_arg, "--svg", svg_arg]);
    if python {
        args.push("--python");
    }
    let out = bench(&args).output();
    out.assert_success();

    let sections = sections(&out);
    let names: Vec<&str> = sections
        .iter()
        .map(|(h, _)| h.split(':').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "experiment_a",
            "experiment_b",
            "pool_overhead",
            "pool_costs",
            "fork_state"
        ],
        "{}",
        out.describe()
    );
    let mut table_rows = 0;
    for ((head, lines), (workload, metrics)) in sections.iter().zip(METRICS) {
        assert!(head.contains(": 1 round "), "{head}");
        let columns: Vec<&str> = lines[0].split_whitespace().collect();
        let mut expected = vec![
            "metric", "run", "median", "min-max", "speedup", "min-max", "vs", "gil",
        ];
        if python {
            expected.extend(["vs", "CPython"]);
        }
        assert_eq!(columns, expected, "{}", out.describe());
        // After the label: median, min-max, speedup, its min-max, vs gil (and vs CPython).
        let figures = if python { 6 } else { 5 };
        let mut rows = lines[1..].iter();
        for &(metric, who) in metrics {
            let labels = who.labels(python);
            for &label in &labels {
                let row = rows
                    .next()
                    .unwrap_or_else(|| panic!("no row {metric} {label}\n{}", out.describe()));
                let (got, cells) = cells(row, metric);
                assert_eq!(got, label, "{row}");
                assert_eq!(cells.len(), figures, "{row}");
                // With one round, the median is the lowest and the highest.
                assert_eq!(format!("{0}-{0}", cells[0]), cells[1], "{row}");
                let median: f64 = cells[0].parse().expect("a number");
                assert!(median >= 0.0, "{row}");
                if metric.ends_with("(tasks/s)") {
                    assert!(median > 0.0, "{row}");
                    assert_eq!(cells[2], "-", "a rate has no speedup: {row}");
                }
                if metric == "serial time (s)" {
                    assert_eq!(cells[2], "-", "{row}");
                } else if workload == "experiment_b" && label != "cpython" {
                    // Printed by the script itself: there even when times round to zero.
                    assert!(cells[2].ends_with('x'), "no speedup: {row}");
                    assert!(cells[3].ends_with('x'), "no speedup spread: {row}");
                }
                let gil = label.ends_with(" gil") || label == "cpython";
                let lang_gil = format!("{} gil", label.split(' ').next().unwrap());
                if gil || !labels.contains(&lang_gil.as_str()) {
                    // The base mode, or a figure the base mode does not print: a blank.
                    assert_eq!(cells[4], "-", "gil is the base mode: {row}");
                } else if metric.ends_with("(tasks/s)") {
                    // Times may round to 0.000 at this size; rates never do.
                    assert!(cells[4].ends_with('x'), "no ratio to gil: {row}");
                    if python {
                        assert!(cells[5].ends_with('x'), "no ratio to CPython: {row}");
                    }
                }
                if python && label != "cpython" && !labels.contains(&"cpython") {
                    assert_eq!(cells[5], "-", "CPython does not print it: {row}");
                }
                if python && label == "cpython" {
                    assert_eq!(cells[5], "-", "{row}");
                }
                table_rows += 1;
            }
        }
        assert_eq!(rows.next(), None, "{}", out.describe());
    }

    let doc: Json =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).expect("valid JSON");
    assert_eq!(doc["repeat"], 1);
    assert_eq!(doc["modes"], serde_json::json!(["gil", "fork", "isolated"]));
    assert_eq!(doc["langs"], serde_json::json!(["lua", "rhai"]));
    assert_eq!(doc["python"].is_string(), python);
    let runs = doc["runs"].as_array().unwrap();
    let per_workload = 6 + usize::from(python);
    assert_eq!(runs.len(), METRICS.len() * per_workload);
    for run in runs {
        assert_eq!(run["round"], 1);
        assert!(run["wall_s"].as_f64().unwrap() > 0.0, "{run}");
        assert!(run["command"].as_array().unwrap().len() >= 2, "{run}");
        let metrics = run["metrics"].as_object().unwrap();
        let workload = run["workload"].as_str().unwrap();
        let (_, expected) = METRICS.iter().find(|(w, _)| *w == workload).unwrap();
        let label = match run["mode"].as_str() {
            Some(mode) => format!("{} {mode}", run["lang"].as_str().unwrap()),
            None => "cpython".to_string(),
        };
        for (metric, who) in expected.iter() {
            if who.labels(true).contains(&label.as_str()) {
                assert!(metrics[*metric].is_number(), "{metric} missing: {run}");
            } else {
                assert!(metrics.get(*metric).is_none(), "{metric} printed: {run}");
            }
        }
        if run["lang"] == "python" {
            assert!(run["mode"].is_null());
        } else {
            assert!(["gil", "fork", "isolated"].contains(&run["mode"].as_str().unwrap()));
            // The size was passed through: a thousandth of the article's.
            let size = run["command"].as_array().unwrap().last().unwrap().clone();
            let want = match workload {
                "experiment_a" => "1000",
                "experiment_b" => "10000",
                "fork_state" => "2000",
                _ => "100",
            };
            assert_eq!(size, want, "{run}");
        }
    }
    let summary = doc["summary"].as_array().unwrap();
    assert_eq!(summary.len(), table_rows, "one summary entry per table row");
    for row in summary {
        for field in [
            "workload",
            "lang",
            "metric",
            "value",
            "speedup",
            "vs_base",
            "vs_cpython",
        ] {
            assert!(row.get(field).is_some(), "{field} missing: {row}");
        }
        assert!(row["value"]["median"].is_number(), "{row}");
    }

    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg"), "not an SVG");
    for text in [
        "experiment_b: speedup over serial",
        "pool_overhead: tasks per second",
        "pool_costs: tasks per second",
        "rhai isolated",
    ] {
        assert!(svg.contains(text), "the SVG lacks {text:?}");
    }
    if python {
        assert!(svg.contains("cpython"));
    }
    assert!(svg.matches("<rect").count() > 20, "too few bars");
}

#[test]
fn a_missing_python3_is_a_one_line_note() {
    let dir = TempDir::new("bench");
    let out = bench(&[
        "experiment_a",
        "--repeat",
        "1",
        "--scale",
        "0.001",
        "--modes",
        "fork",
        "--langs",
        "lua",
        "--python",
    ])
    .env("PATH", dir.path().to_str().unwrap())
    .output();
    out.assert_success();
    let note: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(note.len(), 1, "{}", out.describe());
    assert!(note[0].contains("no python3"), "{}", out.describe());
    assert!(!out.stdout.contains("CPython"), "{}", out.describe());
    assert!(!out.stdout.contains("cpython"), "{}", out.describe());
    out.assert_stdout_contains("threads time (s)  lua fork");
}

/// Writes a workload in Lua, Rhai and Python that prints the same figures.
fn user_workload(dir: &TempDir, stem: &str, lines: &[&str]) {
    let lua: String = lines.iter().map(|l| format!("print({l:?})\n")).collect();
    let rhai: String = lines.iter().map(|l| format!("print({l:?});\n")).collect();
    let py: String = lines.iter().map(|l| format!("print({l:?})\n")).collect();
    dir.write(&format!("{stem}.lua"), &lua);
    dir.write(&format!("{stem}.rhai"), &rhai);
    dir.write(&format!("{stem}.py"), &py);
}

#[test]
fn a_stem_runs_its_scripts_with_its_python_and_speedups_come_from_times() {
    let dir = TempDir::new("bench");
    user_workload(
        &dir,
        "work",
        &[
            "serial time: 0.400 s",
            "halves time: 0.200 s",
            "mode: whatever",
        ],
    );
    let stem = dir.path().join("work");
    let json_path = dir.path().join("work.json");
    let mut args = vec![
        "--json",
        json_path.to_str().unwrap(),
        stem.to_str().unwrap(),
        "--repeat",
        "2",
        "--modes",
        "fork,gil",
    ];
    let python = has_python3();
    if python {
        args.push("--python");
    }
    let out = bench(&args).output();
    out.assert_success();
    let sections = sections(&out);
    assert_eq!(sections.len(), 1, "{}", out.describe());
    let (head, lines) = &sections[0];
    assert!(head.starts_with("work: 2 rounds"), "{head}");
    let halves: Vec<&String> = lines.iter().filter(|l| l.starts_with("halves")).collect();
    assert_eq!(halves.len(), 4 + usize::from(python), "{}", out.describe());
    for row in halves {
        let (label, cells) = cells(row, "halves time (s)");
        assert_eq!(cells[0], "0.200", "{row}");
        assert_eq!(cells[1], "0.200-0.200", "{row}");
        // serial / halves, from the two times of each run.
        assert_eq!(cells[2], "2.00x", "{row}");
        assert_eq!(cells[3], "2.00-2.00x", "{row}");
        // The same time everywhere: 1x against fork and against CPython.
        let base = if label.ends_with("fork") || label == "cpython" {
            "-"
        } else {
            "1.00x"
        };
        assert_eq!(cells[4], base, "{row}");
        if python && label != "cpython" {
            assert_eq!(cells[5], "1.00x", "{row}");
        }
    }

    // The runs, in the order they ran: every configuration once per round, and the second
    // round starting one configuration further along.
    let doc: Json = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let runs = doc["runs"].as_array().unwrap();
    let configs = 4 + usize::from(python);
    assert_eq!(runs.len(), 2 * configs);
    let name = |run: &Json| format!("{} {}", run["lang"], run["mode"]);
    let mut rounds: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run["seq"], i + 1, "{run}");
        let round = run["round"].as_u64().unwrap() as usize;
        assert_eq!(round, 1 + i / configs, "rounds do not overlap: {run}");
        rounds[round - 1].push(name(run));
        assert_eq!(run["metrics"]["halves speedup (x)"], 2.0, "{run}");
    }
    let mut rotated = rounds[0].clone();
    rotated.rotate_left(1);
    assert_eq!(rounds[1], rotated, "round 2 starts one further along");
}

/// A mode or language named twice runs once: `--modes gil,gil` showed every row twice (found
/// by the command-line pass).
#[test]
fn a_mode_or_language_named_twice_runs_once() {
    let dir = TempDir::new("bench");
    user_workload(&dir, "twice", &["serial time: 0.400 s"]);
    let stem = dir.path().join("twice");
    let out = bench(&[
        stem.to_str().unwrap(),
        "--repeat",
        "1",
        "--modes",
        "gil,fork,gil",
        "--langs",
        "lua,lua",
    ])
    .output();
    out.assert_success();
    let sections = sections(&out);
    let (_, lines) = &sections[0];
    let rows: Vec<&String> = lines.iter().filter(|l| l.starts_with("serial")).collect();
    assert_eq!(rows.len(), 2, "{}", out.describe());
}

#[test]
fn a_script_without_figures_is_timed_whole_and_a_wrong_result_fails() {
    let dir = TempDir::new("bench");
    let quiet = dir.write("quiet.lua", "parrun.sleep(0.05)\n");
    let out = bench(&[
        quiet.to_str().unwrap(),
        "--repeat",
        "1",
        "--modes",
        "isolated",
    ])
    .output();
    out.assert_success();
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("wall time (s)"))
        .unwrap_or_else(|| panic!("no wall time row\n{}", out.describe()));
    let (label, cells) = cells(row, "wall time (s)");
    assert_eq!(label, "lua isolated");
    assert!(cells[0].parse::<f64>().unwrap() >= 0.05, "{row}");

    let wrong = dir.write(
        "wrong.rhai",
        "print(\"map: 3 tasks, results WRONG, 0.100 s, 30 tasks/s\");\n",
    );
    let out = bench(&[wrong.to_str().unwrap(), "--repeat", "1", "--modes", "fork"]).output();
    out.assert_code(1)
        .assert_stderr_contains("parrun bench:")
        .assert_stderr_contains("wrong results: map: 3 tasks, results WRONG");
}

#[test]
fn a_script_named_bench_still_runs() {
    let dir = TempDir::new("bench");
    dir.write("bench", "print('script bench', arg[1])\n");
    let run = |args: &[&str]| Run::new(args.iter().copied()).dir(dir.path()).output();
    for args in [
        &["--lang", "lua", "bench", "x"][..],
        &["--lang", "lua", "./bench", "x"],
        &["--lang", "lua", "--", "bench", "x"],
    ] {
        let out = run(args);
        out.assert_success()
            .assert_stdout_contains("script bench\tx");
    }
    // Without --lang, `--` or a path makes `bench` the script, Lua as a file without an
    // extension is.
    for args in [&["--", "bench", "x"][..], &["./bench", "x"]] {
        run(args)
            .assert_success()
            .assert_stdout_contains("script bench\tx");
    }
    // After -e every positional is an argument, `bench` too.
    let out = run(&["-e", "print(arg[1])", "bench"]);
    out.assert_success().assert_stdout_contains("bench");
    assert!(Path::new(&dir.path().join("bench")).exists());
}

#[test]
fn a_wrong_option_is_a_one_line_usage_error() {
    for (args, mentions) in [
        (&["--langs", "python"][..], "unknown language `python`"),
        (&["--modes", "gil,threads"], "unknown mode `threads`"),
        (&["--repeat", "0"], "--repeat"),
        (&["--scale=-1"], "not a positive number"),
        (&["--timeout", "0"], "not a positive number"),
        (&["no_such_workload"], "no built-in workload of that name"),
        (&["no_such_script.lua"], "no script no_such_script.lua"),
        // What clap refuses points to the subcommand's help.
        (&["--repeat", "x"], "(see parrun bench --help)"),
    ] {
        let out = bench(args).output();
        // Status 2, as for parrun's own usage errors (`parrun no_such.lua`): a workload that is
        // not there was a failed bench, status 1.
        out.assert_code(2);
        out.assert_stderr_contains(mentions);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.describe());
        assert!(out.stdout.is_empty(), "{}", out.describe());
    }
}

/// An output file the bench cannot write (`--json`, `--svg` in a missing directory, or a
/// directory) fails at once, before any run, instead of after the whole bench; a script path
/// whose language `--langs` leaves out is an error naming both, not a run of that script.
#[test]
fn an_unwritable_output_or_a_script_of_another_language_fails_before_any_run() {
    let dir = TempDir::new("bench");
    // A script that leaves a mark when it runs.
    let mark = dir.path().join("ran");
    let script = dir.write(
        "marks.lua",
        &format!(
            "io.open({:?}, 'a'):write('x') parrun.sleep(0.01)\n",
            mark.to_str().unwrap()
        ),
    );
    let script = script.to_str().unwrap();
    let missing = dir.path().join("no_such_dir").join("b.json");
    let missing = missing.to_str().unwrap();
    let a_dir = dir.path().to_str().unwrap();
    let dir_script = dir.path().join("dir.lua");
    std::fs::create_dir(&dir_script).unwrap();
    let dir_script = dir_script.to_str().unwrap();
    let out = bench(&[dir_script, "--repeat", "1", "--modes", "gil"]).output();
    out.assert_code(2)
        .assert_stderr_contains(&format!("{dir_script} is a directory, not a script"));
    for (args, mentions) in [
        (vec!["--json", missing], format!("cannot write {missing}")),
        (vec!["--svg", missing], format!("cannot write {missing}")),
        (vec!["--json", a_dir], "is a directory".to_string()),
        (
            vec!["--langs", "rhai"],
            "is a Lua script, and --langs rhai leaves Lua out".to_string(),
        ),
    ] {
        let mut argv = vec![script, "--repeat", "1", "--modes", "gil", "--no-progress"];
        argv.extend(args);
        let out = bench(&argv).output();
        out.assert_code(2);
        out.assert_stderr_contains(&mentions);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.describe());
        assert!(out.stdout.is_empty(), "{}", out.describe());
        assert!(!mark.exists(), "the script ran: {}", out.describe());
    }
}

/// The bench's progress bar (runs done of the total, the run going on) is drawn on stderr
/// when asked (`PARRUN_PROGRESS=always` stands in for a terminal here) and cleared before the
/// table; a stderr that is a pipe, or `--no-progress`, gets nothing.
#[test]
fn the_bench_shows_its_progress_only_on_a_terminal() {
    let dir = TempDir::new("bench");
    let quiet = dir.write("quiet.lua", "parrun.sleep(0.01)\n");
    let args = [
        quiet.to_str().unwrap(),
        "--repeat",
        "2",
        "--modes",
        "gil,fork",
    ];
    let out = bench(&args).env("PARRUN_PROGRESS", "always").output();
    out.assert_success();
    let frames: Vec<String> = out
        .stderr
        .split(['\r', '\n'])
        .map(|f| f.replace("\x1b[2K", "").replace(['█', '░'], ""))
        .map(|f| f.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|f| !f.is_empty())
        .collect();
    assert!(!frames.is_empty(), "no bar\n{}", out.describe());
    assert!(
        frames
            .iter()
            .all(|f| f.starts_with("parrun bench [") && f.contains("/4 runs")),
        "{frames:#?}"
    );
    let last = frames.last().unwrap();
    assert!(
        last.contains(" 4/4 runs") && last.contains("round 2/2: "),
        "{frames:#?}"
    );
    assert!(out.stderr.ends_with("\r\x1b[2K"), "{:?}", out.stderr);
    assert!(out.stdout.contains("wall time (s)"), "{}", out.describe());

    for (env, flags) in [(None, &[][..]), (Some("always"), &["--no-progress"][..])] {
        let mut run = bench(&[&args[..], flags].concat());
        if let Some(value) = env {
            run = run.env("PARRUN_PROGRESS", value);
        }
        let out = run.output();
        out.assert_success();
        assert_eq!(out.stderr, "", "{flags:?}: {}", out.describe());
    }
}

/// `--rhai-vms ast,grain` runs each Rhai configuration on both VMs, grain's as `rhai-grain`:
/// experiment B (its serial time is a row of issue 15's table) and the pool's cost workloads.
#[test]
fn rhai_vms_run_side_by_side() {
    let args = [
        "experiment_b",
        "pool_costs",
        "fork_state",
        "--repeat",
        "1",
        "--scale",
        "0.001",
        "--modes",
        "fork,isolated",
        "--langs",
        "rhai",
        "--rhai-vms",
        "ast,grain",
    ];
    let out = bench(&args).output();
    out.assert_success();
    for metric in [
        "serial time (s)",
        "map chunksize 1 (tasks/s)",
        "apply_async (tasks/s)",
        "pool start time (s)",
        "first map with a local upvalue table time (s)",
    ] {
        for label in ["rhai fork", "rhai-grain fork", "rhai-grain isolated"] {
            let row = out
                .stdout
                .lines()
                .find(|l| {
                    l.starts_with(metric) && l[metric.len()..].trim_start().starts_with(label)
                })
                .unwrap_or_else(|| panic!("no row {metric} {label}\n{}", out.describe()));
            let median: f64 = row[metric.len()..].trim_start()[label.len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap_or_else(|e| panic!("{row}: {e}"));
            assert!(median > 0.0, "{row}");
        }
    }
    let create = "isolated pool create with a big global time (s)";
    let rows: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with(create))
        .collect();
    assert_eq!(
        rows.len(),
        2,
        "rhai and rhai-grain isolated\n{}",
        out.describe()
    );
}
