//! The `--svg` chart: a panel per workload, a group of bars per figure (each parallel variant's
//! speedup over serial, or, for a workload without speedups such as the pool's overhead, its
//! rates), a bar per language and mode with CPython's beside them, medians with a whisker from
//! the lowest to the highest run.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::{Results, Row};

/// One bar: a configuration's median and spread.
struct Bar {
    label: String,
    median: f64,
    min: f64,
    max: f64,
}

/// One panel: a title, an axis name and its groups of bars.
struct Panel {
    title: String,
    axis: &'static str,
    /// Draw the serial line at 1x.
    serial_line: bool,
    groups: Vec<(String, Vec<Bar>)>,
}

fn panels(results: &[Results], rows: &[Row]) -> Vec<Panel> {
    let mut panels = Vec::new();
    for result in results {
        let rows: Vec<&Row> = rows
            .iter()
            .filter(|r| r.workload == result.workload)
            .collect();
        let speedups = rows.iter().any(|r| r.speedup.is_some());
        let mut groups: Vec<(String, Vec<Bar>)> = Vec::new();
        for row in &rows {
            let (name, span) = if speedups {
                match (row.speedup, row.metric.strip_suffix(" time (s)")) {
                    (Some(s), Some(name)) => (name.to_string(), s),
                    _ => continue,
                }
            } else if let Some(name) = row.metric.strip_suffix(" (tasks/s)") {
                (name.to_string(), row.value)
            } else {
                continue;
            };
            let bar = Bar {
                label: row.label.clone(),
                median: span.median,
                min: span.min,
                max: span.max,
            };
            match groups.iter_mut().find(|(g, _)| *g == name) {
                Some((_, bars)) => bars.push(bar),
                None => groups.push((name, vec![bar])),
            }
        }
        if groups.is_empty() {
            continue;
        }
        let (title, axis) = if speedups {
            (
                format!(
                    "{}: speedup over serial (median, whisker: lowest-highest)",
                    result.workload
                ),
                "speedup over serial (x)",
            )
        } else {
            (
                format!(
                    "{}: tasks per second (median, whisker: lowest-highest)",
                    result.workload
                ),
                "tasks/s",
            )
        };
        panels.push(Panel {
            title,
            axis,
            serial_line: speedups,
            groups,
        });
    }
    panels
}

/// A bar's colour: a hue per language (blues for Lua, oranges for Rhai, grey for CPython), a
/// shade per mode.
fn colour(label: &str) -> RGBColor {
    let mut words = label.split(' ');
    let lang = words.next().unwrap_or_default();
    let shade = match words.next() {
        Some("gil") => 0,
        Some("fork") => 1,
        Some("isolated") => 2,
        _ => 1,
    };
    match lang {
        "lua" => [
            RGBColor(0x9e, 0xca, 0xe1),
            RGBColor(0x42, 0x92, 0xc6),
            RGBColor(0x08, 0x51, 0x9c),
        ][shade],
        "rhai" => [
            RGBColor(0xfd, 0xae, 0x6b),
            RGBColor(0xf1, 0x69, 0x13),
            RGBColor(0xa6, 0x36, 0x03),
        ][shade],
        _ => RGBColor(0x55, 0x55, 0x55),
    }
}

const PANEL_HEIGHT: u32 = 380;
const WIDTH: u32 = 1100;
const LEGEND_WIDTH: u32 = 140;
/// The serial run's line at 1x.
const SERIAL: RGBColor = RGBColor(0xcc, 0x00, 0x00);

/// Draws the chart of `rows` into an SVG file at `path`.
pub fn draw(path: &Path, results: &[Results], rows: &[Row]) -> Result<()> {
    let panels = panels(results, rows);
    let height = PANEL_HEIGHT * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    let fail = |e: &dyn std::fmt::Display| anyhow!("cannot draw {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    if panels.is_empty() {
        root.draw(&Text::new(
            "no speedups or rates to draw",
            (20, 20),
            ("sans-serif", 18),
        ))
        .map_err(|e| fail(&e))?;
    }
    let areas = root.split_evenly((panels.len().max(1), 1));
    for (area, panel) in areas.iter().zip(&panels) {
        draw_panel(&root, area, panel).map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw_panel(
    root: &Area,
    area: &Area,
    panel: &Panel,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let groups = panel.groups.len() as f64;
    let bars = || panel.groups.iter().flat_map(|(_, bars)| bars.iter());
    let top = bars().map(|b| b.max).fold(0.0, f64::max);
    let low = bars().map(|b| b.min).fold(f64::INFINITY, f64::min);
    // Rates differ by orders of magnitude (a task per item against chunks): a log scale
    // keeps the small bars visible. Speedups stay linear, around the serial line at 1x.
    let log = !panel.serial_line && low > 0.0 && top / low > 10.0;
    let y = |v: f64| if log { v.max(1e-9).log10() } else { v };
    let (bottom, top) = if log {
        (low.log10().floor(), top.log10() + 0.25)
    } else {
        let top = if panel.serial_line { top.max(1.0) } else { top };
        (0.0, if top > 0.0 { top * 1.15 } else { 1.0 })
    };
    // The legend goes right of the plot, where no bar can hide it.
    let (plot, legend) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
    let mut chart = ChartBuilder::on(&plot)
        .caption(&panel.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..groups, bottom..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .light_line_style(RGBColor(0xf0, 0xf0, 0xf0))
        .y_desc(if log {
            format!("{} (log scale)", panel.axis)
        } else {
            panel.axis.to_string()
        })
        .y_label_formatter(&|&v| {
            if log {
                // Ticks at whole decades, each a power of ten.
                if (v - v.round()).abs() < 1e-6 {
                    format!("{:.0}", 10f64.powf(v.round()))
                } else {
                    String::new()
                }
            } else if panel.serial_line {
                format!("{v:.1}")
            } else {
                format!("{v:.0}")
            }
        })
        .draw()?;

    // A series per configuration, so the legend has one entry for each.
    let mut labels: Vec<&str> = Vec::new();
    for (_, bars) in &panel.groups {
        for bar in bars {
            if !labels.contains(&bar.label.as_str()) {
                labels.push(&bar.label);
            }
        }
    }
    let slot = 0.8 / labels.len().max(1) as f64;
    let value_style =
        TextStyle::from(("sans-serif", 11).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for label in &labels {
        let fill = colour(label);
        let mut rects = Vec::new();
        let mut whiskers = Vec::new();
        let mut values = Vec::new();
        for (g, (_, bars)) in panel.groups.iter().enumerate() {
            let Some(bar) = bars.iter().find(|b| b.label == *label) else {
                continue;
            };
            let i = labels.iter().position(|l| l == label).unwrap_or(0) as f64;
            let x0 = g as f64 + 0.1 + i * slot;
            let x1 = x0 + slot * 0.9;
            let mid = (x0 + x1) / 2.0;
            rects.push(Rectangle::new(
                [(x0, bottom), (x1, y(bar.median))],
                fill.filled(),
            ));
            whiskers.push(PathElement::new(
                vec![(mid, y(bar.min)), (mid, y(bar.max))],
                BLACK.stroke_width(1),
            ));
            let text = if panel.serial_line {
                format!("{:.2}", bar.median)
            } else {
                format!("{:.0}", bar.median)
            };
            values.push(Text::new(text, (mid, y(bar.max)), value_style.clone()));
        }
        chart.draw_series(rects)?;
        chart.draw_series(whiskers)?;
        chart.draw_series(values)?;
    }
    if panel.serial_line {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 1.0), (groups, 1.0)],
            SERIAL.stroke_width(1),
        )))?;
    }
    let entry_style =
        TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let mut y = 50;
    for label in &labels {
        legend.draw(&Rectangle::new(
            [(10, y - 6), (24, y + 6)],
            colour(label).filled(),
        ))?;
        legend.draw(&Text::new(label.to_string(), (32, y), entry_style.clone()))?;
        y += 22;
    }
    if panel.serial_line {
        legend.draw(&PathElement::new(
            vec![(10, y), (24, y)],
            SERIAL.stroke_width(2),
        ))?;
        legend.draw(&Text::new("serial (1x)", (32, y), entry_style.clone()))?;
    }

    // Group names under the axis, centred under their bars.
    let name_style =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (g, (name, _)) in panel.groups.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(g as f64 + 0.5, bottom));
        root.draw(&Text::new(name.clone(), (x, y + 8), name_style.clone()))?;
    }
    Ok(())
}
