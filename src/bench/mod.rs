//! `parrun bench`: runs workloads (the article's experiments A and B, the pool's overhead, the
//! pool's costs and its memory and start-up with a big table, or the user's scripts) with this
//! binary in each mode and language, and with `--python` the same programs in CPython, in
//! interleaved rounds; prints a table per workload, and writes the raw figures as JSON and the
//! speedups as an SVG chart.
//!
//! Every run is a fresh process (`parrun --mode MODE SCRIPT SIZE`), as a user would start it,
//! so a run's figures include nothing of the runs before it. Rounds are round-robin: round r
//! runs every workload in every configuration once before round r + 1 starts, so that a
//! machine that drifts (another job, heat) slows each configuration alike, and ratios between
//! the runs of one round stay fair; each round starts one place further along, so that no
//! configuration always runs first.

mod chart;
mod measure;
mod report;
mod workload;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use report::{Config, Results};
use workload::Lang;

/// The options of `parrun bench`.
#[derive(clap::Args)]
pub struct Options {
    /// Built-in workloads (experiment_a, experiment_b, pool_overhead, pool_costs, fork_state:
    /// all by default) or scripts: `x.lua`, `x.rhai`, or a stem `x` for `x.lua` and `x.rhai`,
    /// with CPython's `x.py` beside them. Figures are the lines a script prints (see the README).
    #[arg(value_name = "SCRIPT")]
    scripts: Vec<String>,

    /// The execution models to run in; the first is the one the others are compared with.
    #[arg(
        long,
        value_name = "MODES",
        value_delimiter = ',',
        default_value = "gil,fork,isolated"
    )]
    modes: Vec<parrun::Mode>,

    /// The languages to run.
    #[arg(
        long,
        value_name = "LANGS",
        value_delimiter = ',',
        default_value = "lua,rhai",
        value_parser = Lang::parse
    )]
    langs: Vec<Lang>,

    /// The Rhai VMs to run the Rhai scripts on (`--rhai-vm`): `grain` runs show as
    /// `rhai-grain`.
    #[arg(long, value_name = "VMS", value_delimiter = ',', default_value = "ast")]
    rhai_vms: Vec<parrun::RhaiVm>,

    /// Rounds: each configuration runs once per round.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,

    /// Run the same workloads in CPython (python3) in the same rounds, and compare.
    #[arg(long)]
    python: bool,

    /// Write every run's figures and the table's rows as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Draw the speedups (and the pool's rates) as an SVG chart in FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,

    /// Scale the built-in workloads' sizes (0.01: a hundredth of the article's).
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0, value_parser = positive)]
    scale: f64,

    /// An argument for every script, after a built-in's size (repeat for more).
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    args: Vec<String>,

    /// The launcher the runs of mode mpi start under (split at spaces), parrun and its
    /// arguments after it: rank 0 runs the script, the other ranks are its workers.
    #[arg(
        long,
        value_name = "COMMAND",
        default_value = "mpirun --oversubscribe -np 3"
    )]
    mpirun: String,

    /// Stop a run that takes longer than this many seconds (and fail the bench).
    #[arg(long, value_name = "SECONDS", default_value = "900", value_parser = seconds)]
    timeout: Duration,

    /// Show no progress bar (runs done, the current run) on stderr.
    #[arg(long)]
    no_progress: bool,
}

/// What the bench was asked to run is wrong (a script or workload that is not there, an
/// output it cannot write), found before anything runs: `parrun bench` exits with status 2 for
/// it, as parrun does for any usage error.
#[derive(Debug)]
pub struct Usage(anyhow::Error);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Usage {}

fn usage(error: anyhow::Error) -> anyhow::Error {
    Usage(error).into()
}

/// Runs the bench `options` describe, printing its tables on stdout.
pub fn run(options: Options) -> Result<()> {
    let timeout = options.timeout;
    // Each once, in the order first given: `--modes gil,gil` showed every row twice.
    let mut langs = Vec::new();
    for &lang in &options.langs {
        if !langs.iter().any(|l: &Lang| l.name() == lang.name()) {
            langs.push(lang);
        }
    }
    let mut modes: Vec<String> = Vec::new();
    for mode in &options.modes {
        if !modes.iter().any(|m| m == mode.name()) {
            modes.push(mode.name().to_string());
        }
    }
    let parrun = std::env::current_exe().context("cannot find the parrun binary")?;
    let parrun = parrun.to_string_lossy().into_owned();
    let python = if options.python { python3() } else { None };

    // A bench takes minutes: an output it cannot write should fail now, not after it.
    for path in [&options.json, &options.svg].into_iter().flatten() {
        writable(path).map_err(usage)?;
    }
    let scratch = workload::Scratch::new()?;
    let workloads = workload::resolve(
        &options.scripts,
        &langs,
        options.scale,
        &options.args,
        &scratch,
    )
    .map_err(usage)?;
    let rounds = options.repeat as usize;
    let mut results: Vec<Results> = workloads
        .iter()
        .map(|w| {
            let mut configs = Vec::new();
            for (lang, script) in &w.scripts {
                // Lua has one VM; Rhai runs on each VM asked for.
                let vms: Vec<Option<parrun::RhaiVm>> = match lang.name() {
                    "rhai" => options.rhai_vms.iter().copied().map(Some).collect(),
                    _ => vec![None],
                };
                for vm in vms {
                    for mode in &modes {
                        let mut command: Vec<String> = match mode.as_str() {
                            "mpi" => options
                                .mpirun
                                .split_whitespace()
                                .map(String::from)
                                .collect(),
                            _ => Vec::new(),
                        };
                        command.extend([parrun.clone(), "--mode".to_string(), mode.clone()]);
                        if let Some(vm) = vm {
                            command.extend(["--rhai-vm".to_string(), vm.name().to_string()]);
                        }
                        command.push(script.to_string_lossy().into_owned());
                        command.extend(w.args.iter().cloned());
                        configs.push(Config {
                            lang: match vm {
                                Some(parrun::RhaiVm::Grain) => "rhai-grain",
                                _ => lang.name(),
                            },
                            mode: Some(mode.clone()),
                            command,
                        });
                    }
                }
            }
            if let (Some(_), Some(program)) = (&python, &w.python) {
                let mut command = vec!["python3".to_string()];
                command.push(program.to_string_lossy().into_owned());
                command.extend(w.args.iter().cloned());
                configs.push(Config {
                    lang: "python",
                    mode: None,
                    command,
                });
            }
            let runs = configs
                .iter()
                .map(|_| (0..rounds).map(|_| None).collect())
                .collect();
            Results {
                workload: w.name.clone(),
                configs,
                runs,
            }
        })
        .collect();

    let progress = Progress::new(
        results.iter().map(|r| r.configs.len()).sum::<usize>() * rounds,
        !options.no_progress,
    );
    let mut seq = 0;
    for round in 0..rounds {
        // Each round starts one further along, workloads and configurations alike, so that no
        // configuration always runs first (after a pause) or right after the same neighbour:
        // a run's place in the round would otherwise skew its row.
        let count = results.len();
        for w in (0..count).map(|i| (i + round) % count) {
            let result = &mut results[w];
            let configs = result.configs.len();
            for index in (0..configs).map(|i| (i + round) % configs) {
                let config = &result.configs[index];
                progress.show(&format!(
                    "round {}/{rounds}: {} {}",
                    round + 1,
                    result.workload,
                    config.label()
                ));
                let measured = measure::run(&config.command[0], &config.command[1..], timeout);
                progress.ran();
                let mut measured = match measured {
                    Ok(m) => m,
                    Err(e) => {
                        progress.clear();
                        return Err(e);
                    }
                };
                seq += 1;
                measured.seq = seq;
                result.runs[index][round] = Some(measured);
            }
        }
    }
    progress.clear();

    let base = (modes.len() > 1).then(|| modes[0].as_str());
    let mut all_rows = Vec::new();
    let mut stdout = std::io::stdout().lock();
    for (i, result) in results.iter().enumerate() {
        let rows = result.rows(base);
        let text = report::table(&result.workload, rounds, &rows, base, python.is_some());
        if i > 0 {
            writeln!(stdout)?;
        }
        write!(stdout, "{text}")?;
        all_rows.extend(rows);
    }
    stdout.flush()?;

    if let Some(path) = &options.json {
        let settings = json!({
            "parrun": env!("CARGO_PKG_VERSION"),
            "repeat": rounds,
            "modes": modes,
            "langs": langs.iter().map(|l| l.name()).collect::<Vec<_>>(),
            "rhai_vms": options.rhai_vms.iter().map(|v| v.name()).collect::<Vec<_>>(),
            "scale": options.scale,
            "python": python,
            "workloads": results.iter().map(|r| r.workload.clone()).collect::<Vec<_>>(),
        });
        let doc = report::json(settings, &results, &all_rows);
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &options.svg {
        chart::draw(path, &results, &all_rows)?;
    }
    Ok(())
}

/// Whether `path` can be written (created or replaced) now, without writing it: a directory
/// that exists and lets this user create files in it, and no directory (or unwritable file) at
/// `path` itself.
fn writable(path: &std::path::Path) -> Result<()> {
    use nix::unistd::{access, AccessFlags};
    let fail = |why: String| anyhow::anyhow!("cannot write {}: {why}", path.display());
    if path.is_dir() {
        return Err(fail("it is a directory".into()));
    }
    let check = if path.exists() {
        path.to_path_buf()
    } else {
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    };
    access(&check, AccessFlags::W_OK).map_err(|e| {
        fail(match e {
            nix::errno::Errno::ENOENT => "no such directory".to_string(),
            e => e.desc().to_string(),
        })
    })
}

/// A positive, finite number.
fn positive(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|x| *x > 0.0 && x.is_finite())
        .ok_or_else(|| format!("`{text}` is not a positive number"))
}

/// A positive number of seconds.
fn seconds(text: &str) -> Result<Duration, String> {
    positive(text).and_then(|s| {
        Duration::try_from_secs_f64(s).map_err(|_| format!("`{text}` is too many seconds"))
    })
}

/// CPython's version, or `None` after a one-line note when `python3` cannot run.
fn python3() -> Option<String> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.version.split()[0])"])
        .output();
    match out {
        Ok(out) if out.status.success() => {
            Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
        Ok(out) => {
            eprintln!(
                "parrun bench: python3 does not run ({}): no CPython runs",
                out.status
            );
            None
        }
        Err(e) => {
            eprintln!("parrun bench: no python3 ({e}): no CPython runs");
            None
        }
    }
}

/// A progress bar on stderr (indicatif), as a long map's: runs done of the total and the run
/// going on. Only when stderr is a terminal (or `PARRUN_PROGRESS=always`, for tests), and not
/// with `--no-progress`, so that logs and pipes get nothing.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new(total: usize, wanted: bool) -> Self {
        use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
        let target = match std::env::var("PARRUN_PROGRESS").as_deref() {
            _ if !wanted => return Progress(None),
            Ok("never") => return Progress(None),
            // Drawn whether stderr is a terminal or not.
            Ok("always") => ProgressDrawTarget::term_like(Box::new(console::Term::stderr())),
            _ if std::io::stderr().is_terminal() => ProgressDrawTarget::stderr(),
            _ => return Progress(None),
        };
        let style = ProgressStyle::with_template(
            "parrun bench [{elapsed}] {wide_bar} {pos}/{len} runs, ETA {eta}: {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        Progress(Some(
            ProgressBar::with_draw_target(Some(total as u64), target).with_style(style),
        ))
    }

    /// A run starts: `what` it is.
    fn show(&self, what: &str) {
        if let Some(bar) = &self.0 {
            bar.set_message(what.to_string());
        }
    }

    /// A run has ended.
    fn ran(&self) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
        }
    }

    /// No bar any more: the last frame (the runs done), then a clear line for the table.
    fn clear(&self) {
        if let Some(bar) = &self.0 {
            bar.abandon();
            bar.finish_and_clear();
        }
    }
}
