//! What `parrun bench` makes of its runs: a row per workload, metric and run configuration
//! (medians, spreads, speedups over serial and ratios paired per round), printed as a table and
//! written, beside every run's raw figures, as JSON.

use std::fmt::Write as _;

use serde_json::{json, Value as Json};

use super::measure::Measured;

/// How a workload ran: parrun in a language and mode, or CPython.
pub struct Config {
    /// `lua`, `rhai`, or `python` for CPython.
    pub lang: &'static str,
    /// parrun's `--mode`; `None` for CPython.
    pub mode: Option<String>,
    /// The command line (the program first).
    pub command: Vec<String>,
}

impl Config {
    /// The name of its rows: `lua gil`, `rhai fork`, `cpython`.
    pub fn label(&self) -> String {
        match &self.mode {
            Some(mode) => format!("{} {mode}", self.lang),
            None => "cpython".to_string(),
        }
    }
}

/// Every run of one workload.
pub struct Results {
    /// The workload's name.
    pub workload: String,
    /// The configurations it ran in, CPython last.
    pub configs: Vec<Config>,
    /// By configuration, then round (`None`: not run yet).
    pub runs: Vec<Vec<Option<Measured>>>,
}

/// A median with the lowest and highest value it was taken from.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Span {
    fn of(mut values: Vec<f64>) -> Option<Span> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        Some(Span {
            median: median(&values),
            min: values[0],
            max: values[values.len() - 1],
        })
    }

    fn json(&self) -> Json {
        json!({"median": self.median, "min": self.min, "max": self.max})
    }
}

/// The median of sorted values (the mean of the middle two for an even count).
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// One line of the table: a metric of a workload in one configuration.
pub struct Row {
    pub workload: String,
    /// The configuration's index in its [`Results`].
    pub config: usize,
    pub label: String,
    pub metric: String,
    pub value: Span,
    /// For a time: serial time over this time, run by run.
    pub speedup: Option<Span>,
    /// How many times faster than the same language in the base mode, paired per round.
    pub vs_base: Option<f64>,
    /// How many times faster than CPython, paired per round.
    pub vs_python: Option<f64>,
}

/// Whether a larger figure of `metric` is better (a rate) rather than worse (a time).
fn higher_is_better(metric: &str) -> bool {
    metric.ends_with("(tasks/s)")
}

/// The speedup metric that goes with a time metric: `X time (s)` with `X speedup (x)`.
fn speedup_of(metric: &str) -> Option<String> {
    Some(format!("{} speedup (x)", metric.strip_suffix(" time (s)")?))
}

impl Results {
    fn values(&self, config: usize, metric: &str) -> Vec<f64> {
        self.runs[config]
            .iter()
            .flatten()
            .filter_map(|m| m.metrics.get(metric))
            .collect()
    }

    /// The median over rounds of how many times faster `config` was than `reference` in the
    /// same round: a drifting machine slows both runs of a round alike.
    fn per_round(&self, config: usize, reference: usize, metric: &str) -> Option<f64> {
        let mut ratios: Vec<f64> = self.runs[config]
            .iter()
            .zip(&self.runs[reference])
            .filter_map(|(a, b)| {
                let a = a.as_ref()?.metrics.get(metric).filter(|v| *v > 0.0)?;
                let b = b.as_ref()?.metrics.get(metric).filter(|v| *v > 0.0)?;
                Some(if higher_is_better(metric) {
                    a / b
                } else {
                    b / a
                })
            })
            .collect();
        if ratios.is_empty() {
            return None;
        }
        ratios.sort_by(f64::total_cmp);
        Some(median(&ratios))
    }

    /// The metrics, in the order the runs printed them (parrun's first, then CPython's). A
    /// metric only some configurations print (a forked worker's memory) goes right after the
    /// one its run printed before it, so that it keeps its place among the others.
    fn metrics(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for measured in self.runs.iter().flatten().flatten() {
            let mut at = 0;
            for (name, _) in &measured.metrics.0 {
                match names.iter().position(|n| n == name) {
                    Some(i) => at = i + 1,
                    None => {
                        names.insert(at, name.clone());
                        at += 1;
                    }
                }
            }
        }
        names
    }

    /// The table's rows: each metric but the speedups (which go beside their times), in each
    /// configuration that printed it. `base` is the mode the others are compared with.
    pub fn rows(&self, base: Option<&str>) -> Vec<Row> {
        let python = self.configs.iter().position(|c| c.mode.is_none());
        let mut rows = Vec::new();
        for metric in self.metrics() {
            if metric.ends_with(" speedup (x)") {
                continue;
            }
            for (index, config) in self.configs.iter().enumerate() {
                let Some(value) = Span::of(self.values(index, &metric)) else {
                    continue;
                };
                let speedup = speedup_of(&metric).and_then(|s| Span::of(self.values(index, &s)));
                let parrun = config.mode.is_some();
                let base_index = base.filter(|b| parrun && config.mode.as_deref() != Some(b));
                let base_index = base_index.and_then(|b| {
                    self.configs
                        .iter()
                        .position(|c| c.lang == config.lang && c.mode.as_deref() == Some(b))
                });
                rows.push(Row {
                    workload: self.workload.clone(),
                    config: index,
                    label: config.label(),
                    metric: metric.clone(),
                    value,
                    speedup,
                    vs_base: base_index.and_then(|b| self.per_round(index, b, &metric)),
                    vs_python: python
                        .filter(|_| parrun)
                        .and_then(|p| self.per_round(index, p, &metric)),
                });
            }
        }
        rows
    }
}

/// A figure as the table shows it: a rate in whole tasks, megabytes to the hundredth, and a
/// time to the millisecond, or, under a tenth of a second, to three significant digits (a
/// pool's start, about a millisecond, would otherwise read 0.001 or 0.002).
fn figure(metric: &str, value: f64) -> String {
    if higher_is_better(metric) {
        format!("{value:.0}")
    } else if metric.ends_with("(MB)") {
        format!("{value:.2}")
    } else if value != 0.0 && value.abs() < 0.1 {
        let places = (2.0 - value.abs().log10().floor()).min(9.0) as usize;
        format!("{value:.places$}")
    } else {
        format!("{value:.3}")
    }
}

fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.2}x"))
}

/// The table for one workload's rows, as printed.
pub fn table(
    workload: &str,
    rounds: usize,
    rows: &[Row],
    base: Option<&str>,
    python: bool,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## {workload}: {rounds} round{} (median, lowest-highest; speedup: serial time / time, \
         in the same run; vs: how many times faster, paired per round)",
        if rounds == 1 { "" } else { "s" }
    );
    let metric_width = rows
        .iter()
        .map(|r| r.metric.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let label_width = rows.iter().map(|r| r.label.len()).max().unwrap_or(3).max(3);
    let mut header = format!(
        "{:metric_width$}  {:label_width$}  {:>10}  {:>17}  {:>7}  {:>11}",
        "metric", "run", "median", "min-max", "speedup", "min-max"
    );
    if let Some(base) = base {
        let _ = write!(header, "  {:>10}", format!("vs {base}"));
    }
    if python {
        let _ = write!(header, "  {:>10}", "vs CPython");
    }
    let _ = writeln!(out, "{}", header.trim_end());
    for row in rows {
        let m = &row.metric;
        let spread = format!("{}-{}", figure(m, row.value.min), figure(m, row.value.max));
        let (speedup, speedup_spread) = match row.speedup {
            Some(s) => (
                format!("{:.2}x", s.median),
                format!("{:.2}-{:.2}x", s.min, s.max),
            ),
            None => ("-".to_string(), "-".to_string()),
        };
        let mut line = format!(
            "{m:metric_width$}  {:label_width$}  {:>10}  {spread:>17}  {speedup:>7}  \
             {speedup_spread:>11}",
            row.label,
            figure(m, row.value.median),
        );
        if base.is_some() {
            let _ = write!(line, "  {:>10}", ratio(row.vs_base));
        }
        if python {
            let _ = write!(line, "  {:>10}", ratio(row.vs_python));
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The JSON document: the settings, every run's raw figures, and the table's rows.
pub fn json(settings: Json, results: &[Results], rows: &[Row]) -> Json {
    let mut runs = Vec::new();
    for result in results {
        for (config, per_round) in result.configs.iter().zip(&result.runs) {
            for (round, measured) in per_round.iter().enumerate() {
                let Some(measured) = measured else { continue };
                let metrics: serde_json::Map<String, Json> = measured
                    .metrics
                    .0
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect();
                runs.push(json!({
                    "seq": measured.seq,
                    "round": round + 1,
                    "workload": result.workload,
                    "lang": config.lang,
                    "mode": config.mode,
                    "command": config.command,
                    "wall_s": measured.wall,
                    "metrics": metrics,
                }));
            }
        }
    }
    runs.sort_by_key(|run| run["seq"].as_u64());
    let summary: Vec<Json> = rows
        .iter()
        .map(|row| {
            let config = results
                .iter()
                .find(|r| r.workload == row.workload)
                .map(|r| &r.configs[row.config]);
            json!({
                "workload": row.workload,
                "lang": config.map(|c| c.lang),
                "mode": config.and_then(|c| c.mode.clone()),
                "metric": row.metric,
                "value": row.value.json(),
                "speedup": row.speedup.map(|s| s.json()),
                "vs_base": row.vs_base,
                "vs_cpython": row.vs_python,
            })
        })
        .collect();
    let mut doc = settings;
    doc["runs"] = Json::Array(runs);
    doc["summary"] = Json::Array(summary);
    doc
}

#[cfg(test)]
mod tests {
    use super::super::measure::{Measured, Metrics};
    use super::*;

    fn measured(pairs: &[(&str, f64)]) -> Option<Measured> {
        Some(Measured {
            metrics: Metrics(pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()),
            wall: 1.0,
            seq: 0,
        })
    }

    fn config(lang: &'static str, mode: Option<&str>) -> Config {
        Config {
            lang,
            mode: mode.map(String::from),
            command: vec![],
        }
    }

    #[test]
    fn ratios_pair_runs_of_one_round() {
        let t = "threads time (s)";
        let s = "threads speedup (x)";
        let results = Results {
            workload: "w".into(),
            configs: vec![
                config("lua", Some("gil")),
                config("lua", Some("fork")),
                config("python", None),
            ],
            runs: vec![
                vec![
                    measured(&[(t, 2.0), (s, 1.0)]),
                    measured(&[(t, 4.0), (s, 1.0)]),
                ],
                vec![
                    measured(&[(t, 1.0), (s, 2.0)]),
                    measured(&[(t, 1.0), (s, 4.0)]),
                ],
                // CPython's round 2 ran on a machine twice as slow: paired, fork is 2x in both.
                vec![measured(&[(t, 2.0)]), measured(&[(t, 2.0)])],
            ],
        };
        let rows = results.rows(Some("gil"));
        assert_eq!(
            rows.len(),
            3,
            "one row per configuration, speedups beside times"
        );
        let fork = &rows[1];
        assert_eq!(fork.label, "lua fork");
        assert_eq!(fork.value.median, 1.0);
        // Per round: 2/1 and 4/1.
        assert_eq!(fork.vs_base, Some(3.0));
        assert_eq!(fork.vs_python, Some(2.0));
        let s = fork.speedup.unwrap();
        assert_eq!((s.median, s.min, s.max), (3.0, 2.0, 4.0));
        assert_eq!(
            rows[0].vs_base, None,
            "the base mode is not compared with itself"
        );
        assert_eq!(rows[0].vs_python, Some(0.75)); // 2/2 and 2/4
        assert_eq!(rows[2].vs_python, None);
    }

    /// A figure some configurations do not print (a forked worker's memory) has no row there,
    /// and no ratio against a configuration that lacks it; a run that printed it in one round
    /// only counts that round.
    #[test]
    fn missing_figures_leave_rows_out() {
        let m = "idle worker memory (MB)";
        let t = "build time (s)";
        let results = Results {
            workload: "w".into(),
            configs: vec![
                config("lua", Some("gil")),
                config("lua", Some("fork")),
                config("python", None),
            ],
            runs: vec![
                vec![measured(&[(t, 1.0)]), measured(&[(t, 1.0)])],
                vec![
                    measured(&[(t, 1.0), (m, 0.5)]),
                    measured(&[(t, 1.0), (m, 1.0)]),
                ],
                // CPython's first round printed no memory (an error would fail the run; a
                // script may also print a figure only sometimes).
                vec![measured(&[(t, 0.5)]), measured(&[(t, 0.5), (m, 2.0)])],
            ],
        };
        let rows = results.rows(Some("gil"));
        let names: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.metric.as_str(), r.label.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (t, "lua gil"),
                (t, "lua fork"),
                (t, "cpython"),
                (m, "lua fork"),
                (m, "cpython"),
            ]
        );
        let fork = &rows[3];
        assert_eq!((fork.value.min, fork.value.max), (0.5, 1.0));
        assert_eq!(fork.vs_base, None, "lua gil printed no memory");
        // Lower is better: paired in round 2 only, 2 MB against 1 MB.
        assert_eq!(fork.vs_python, Some(2.0));
        let text = table("w", 2, &rows, Some("gil"), true);
        let line = text
            .lines()
            .find(|l| l.starts_with(m) && l.contains("lua fork"))
            .unwrap();
        let cells: Vec<&str> = line[m.len()..].split_whitespace().collect();
        assert_eq!(
            cells,
            ["lua", "fork", "0.75", "0.50-1.00", "-", "-", "-", "2.00x"],
            "{text}"
        );
    }

    /// A metric the first configuration does not print keeps its place: after the metric its
    /// own run printed before it.
    #[test]
    fn metrics_keep_the_order_they_were_printed_in() {
        let (a, b, c, d) = ("a (s)", "b (MB)", "c (s)", "d (s)");
        let results = Results {
            workload: "w".into(),
            configs: vec![config("lua", Some("gil")), config("lua", Some("fork"))],
            runs: vec![
                vec![measured(&[(a, 1.0), (c, 1.0)])],
                vec![measured(&[(b, 1.0), (a, 1.0), (d, 1.0), (c, 1.0)])],
            ],
        };
        assert_eq!(results.metrics(), [b, a, d, c]);
    }

    #[test]
    fn small_times_keep_three_significant_digits() {
        let t = "pool start time (s)";
        assert_eq!(figure(t, 0.0015234), "0.00152");
        assert_eq!(figure(t, 0.05), "0.0500");
        assert_eq!(figure(t, 0.0), "0.000");
        assert_eq!(figure(t, 0.2), "0.200");
        assert_eq!(figure(t, 2.5), "2.500");
        assert_eq!(figure("idle worker memory (MB)", 1.638), "1.64");
        assert_eq!(figure("map (tasks/s)", 1234.6), "1235");
    }
}
