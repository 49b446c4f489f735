//! One run of one workload: the command runs to its end (or its timeout), and the figures it
//! printed are read from its standard output.
//!
//! A script reports figures by printing lines in four forms, the ones the article's scripts
//! and the pool's cost workloads print:
//!
//! - `NAME time: SECONDS s` is the metric `NAME time (s)` (the unit may be left out, and a tab
//!   may follow the colon: Lua's `print("serial time:", t)`, the article's `print('serial
//!   time:', t)`);
//! - `NAME speedup: Xx` is `NAME speedup (x)`;
//! - `NAME: COUNT tasks, results ok, SECONDS s, RATE tasks/s` is `NAME (tasks/s)` (any status
//!   but `ok` fails the run);
//! - `NAME memory: X MB` is `NAME memory (MB)` (megabytes of 10^6 bytes; lower is better, as
//!   for a time).
//!
//! A figure a run does not print (a memory that only a forked worker has, say) is simply not
//! among its metrics: the table has no row for it in that configuration.
//!
//! A run that prints `serial time` and another `NAME time` but no `NAME speedup` gets that
//! speedup computed from the two times of the same run. A run that prints none of these is
//! measured by its wall time alone (`wall time (s)`).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The metric a run that prints no figures is measured by.
pub const WALL: &str = "wall time (s)";

/// Figures by name, in the order they were printed (the table's order).
#[derive(Clone, Debug, Default)]
pub struct Metrics(pub Vec<(String, f64)>);

impl Metrics {
    /// The figure of `name`, if the run printed it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(k, _)| k == name).map(|&(_, v)| v)
    }

    /// Sets `name` (replacing a figure printed twice: the last one counts).
    pub fn insert(&mut self, name: String, value: f64) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }
}

/// What one run produced.
pub struct Measured {
    /// Every figure, by metric name, in the order the run printed them.
    pub metrics: Metrics,
    /// From start to exit, seconds.
    pub wall: f64,
    /// Its place in the bench's order of runs, from 1 (0 until the bench sets it).
    pub seq: usize,
}

/// Runs `program args`, failing on a non-zero exit, a wrong result or after `timeout`.
pub fn run(program: &str, args: &[String], timeout: Duration) -> Result<Measured> {
    let shown = || {
        std::iter::once(program)
            .chain(args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        // The bench's own bar is the one on the terminal: a run draws none, even if forced.
        .env_remove("PARRUN_PROGRESS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", shown()))?;
    // Both pipes are drained while the run goes on, so that a chatty script never blocks.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > timeout {
            // SIGTERM first: parrun and CPython's multiprocessing then stop their workers too.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let grace = Instant::now();
            while child.try_wait()?.is_none() && grace.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} ran longer than {timeout:?}", shown());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = start.elapsed().as_secs_f64();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{} failed ({status}):\n{}", shown(), tail.join("\n"));
    }
    let mut metrics = parse(&stdout).with_context(shown)?;
    if metrics.0.is_empty() {
        metrics.insert(WALL.to_string(), wall);
    }
    Ok(Measured {
        metrics,
        wall,
        seq: 0,
    })
}

/// The figures in a run's standard output (see the module doc).
pub fn parse(stdout: &str) -> Result<Metrics> {
    let mut metrics = Metrics::default();
    for line in stdout.lines() {
        if let Some((name, value)) = figure(line, " time:", "s") {
            metrics.insert(format!("{name} time (s)"), value);
        } else if let Some((name, value)) = figure(line, " speedup:", "x") {
            metrics.insert(format!("{name} speedup (x)"), value);
        } else if let Some((name, value)) = figure(line, " memory:", "MB") {
            metrics.insert(format!("{name} memory (MB)"), value);
        } else if let Some((name, rate)) = rate_line(line) {
            let (status, value) = rate;
            if status != "ok" {
                bail!("wrong results: {line}");
            }
            metrics.insert(format!("{name} (tasks/s)"), value);
        }
    }
    let times: Vec<(String, f64)> = metrics
        .0
        .iter()
        .filter_map(|(k, v)| Some((k.strip_suffix(" time (s)")?.to_string(), *v)))
        .collect();
    if let Some(serial) = metrics.get("serial time (s)") {
        for (name, time) in times {
            let key = format!("{name} speedup (x)");
            if name != "serial" && serial > 0.0 && time > 0.0 && metrics.get(&key).is_none() {
                metrics.insert(key, serial / time);
            }
        }
    }
    Ok(metrics)
}

/// `NAME KEY VALUE [UNIT]` (`serial time: 2.5 s`) as (NAME, VALUE): white space of any kind
/// after the key (Lua's `print("serial time:", t)` puts a tab there, Python's a space), and
/// the unit may be left out, as the article's scripts print their times.
fn figure<'a>(line: &'a str, key: &str, unit: &str) -> Option<(&'a str, f64)> {
    let (name, rest) = line.split_once(key)?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let rest = rest.trim();
    let number = rest.strip_suffix(unit).map_or(rest, str::trim_end);
    Some((name, number.parse().ok()?))
}

/// `NAME: COUNT tasks, results STATUS, SECONDS s, RATE tasks/s` as (NAME, (STATUS, RATE)).
fn rate_line(line: &str) -> Option<(&str, (&str, f64))> {
    let (name, rest) = line.split_once(": ")?;
    let rate = rest.strip_suffix(" tasks/s")?;
    let mut parts = rate.split(", ");
    parts.next()?.strip_suffix(" tasks")?;
    let status = parts.next()?.strip_prefix("results ")?;
    parts.next()?.strip_suffix(" s")?;
    let value = parts.next()?.parse().ok()?;
    Some((name, (status, value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_times_speedups_and_rates() {
        let out = "mode: fork\nserial total: 42\nserial time: 2.000 s\nprocesses time: 1.0 s\n\
                   threads time: 2.5 s\nprocesses speedup: 1.95x\n\
                   map chunksize 1: 100 tasks, results ok, 0.010 s, 10000 tasks/s\n";
        let m = parse(out).unwrap();
        let names: Vec<&str> = m.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "serial time (s)",
                "processes time (s)",
                "threads time (s)",
                "processes speedup (x)",
                "map chunksize 1 (tasks/s)",
                "threads speedup (x)",
            ]
        );
        assert_eq!(m.get("serial time (s)"), Some(2.0));
        assert_eq!(m.get("processes time (s)"), Some(1.0));
        // Printed by the script: kept as printed.
        assert_eq!(m.get("processes speedup (x)"), Some(1.95));
        // Not printed: serial over the same run's time.
        assert_eq!(m.get("threads speedup (x)"), Some(0.8));
        assert_eq!(m.get("map chunksize 1 (tasks/s)"), Some(10000.0));
    }

    #[test]
    fn reads_times_printed_without_their_unit_or_after_a_tab() {
        // Lua's `print("serial time:", t)`, Rhai's `print(`serial time: ${t}`)`.
        let out = "serial time:\t0.5\nprocesses time: 0.25\nthreads time:0.5\nfirst time: 1e-3 s\n";
        let m = parse(out).unwrap();
        assert_eq!(m.get("serial time (s)"), Some(0.5));
        assert_eq!(m.get("processes time (s)"), Some(0.25));
        assert_eq!(m.get("processes speedup (x)"), Some(2.0));
        assert_eq!(
            m.get("threads time (s)"),
            None,
            "no space after the colon: not a figure"
        );
        assert_eq!(m.get("first time (s)"), Some(0.001));
    }

    #[test]
    fn reads_memory_in_megabytes() {
        let out = "mode: fork\nidle worker memory: 0.471 MB\n\
                   (the heap: 0.2 MB; the worker's private memory is 324% of it)\n\
                   inherited table private memory: 142 MB\n\
                   broken memory: 12 kB\nfirst map time: 0.001500 s\n";
        let m = parse(out).unwrap();
        let names: Vec<&str> = m.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "idle worker memory (MB)",
                "inherited table private memory (MB)",
                "first map time (s)",
            ],
            "a line that only mentions memory, or another unit, is no figure"
        );
        assert_eq!(m.get("idle worker memory (MB)"), Some(0.471));
        assert_eq!(m.get("inherited table private memory (MB)"), Some(142.0));
        assert_eq!(m.get("first map time (s)"), Some(0.0015));
    }

    #[test]
    fn wrong_results_fail() {
        let out = "map: 3 tasks, results WRONG, 0.1 s, 30 tasks/s\n";
        assert!(parse(out).is_err());
    }
}
