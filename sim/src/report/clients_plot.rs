//! The clients' time series (`[client]` scenarios): offered load and retries, goodput, and
//! database queries over time, one line per policy. This is the plot that shows a retry storm
//! outliving its trigger: after the offered load drops back, a policy in a metastable failure
//! keeps its retries high and its goodput low.

use std::path::Path;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::plots::{
    Key, TimeFrame, color, draw_policy_lines, err, log_range, register_font, side_legend, time_frame, time_panel,
};
use crate::stats::TimeSeries;

fn clients_plot<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[(String, String, TimeSeries)],
) -> Result<()> {
    let Some(TimeFrame { panels, legend, width, t_end }) = time_frame(root, title, series)? else { return Ok(()) };
    let first = &series[0].2;
    let rate = |n: u64| n as f64 / width;
    let at = |i: usize| (i as f64 + 0.5) * width;

    // Offered load (fresh requests, the same for every policy) and each policy's retries.
    let y = log_range(
        series
            .iter()
            .flat_map(|(_, _, s)| s.buckets.iter().flat_map(|b| [rate(b.arrivals), rate(b.retries)]))
            .filter(|v| *v > 0.0),
    );
    let floor = y.start;
    let mut c = time_panel(&panels[0], t_end, y, ("time (s)", "fresh (black), retries/s (log)"))?;
    let offered: Vec<(f64, f64)> =
        first.buckets.iter().enumerate().map(|(i, b)| (at(i), rate(b.arrivals).max(floor))).collect();
    c.draw_series(LineSeries::new(offered, BLACK.stroke_width(3))).map_err(err)?;
    draw_policy_lines(&mut c, series, |s| {
        s.buckets.iter().enumerate().map(|(i, b)| (at(i), rate(b.retries).max(floor))).collect()
    })?;
    let mut keys = vec![("offered load (fresh requests)".to_string(), BLACK, Key::Line(3))];
    keys.extend(series.iter().map(|(name, policy, _)| {
        (name.clone(), color(policy), Key::Line(if policy == "window" { 5 } else { 2 }))
    }));
    side_legend(&legend, &keys, 14)?;

    // Goodput: answers within the timeout.
    let y = log_range(series.iter().flat_map(|(_, _, s)| s.buckets.iter().map(|b| rate(b.goodput))).filter(|v| *v > 0.0));
    let floor = y.start;
    let mut c = time_panel(&panels[1], t_end, y, ("time (s)", "goodput/s (log)"))?;
    draw_policy_lines(&mut c, series, |s| {
        s.buckets.iter().enumerate().map(|(i, b)| (at(i), rate(b.goodput).max(floor))).collect()
    })?;

    // Database queries.
    let y = log_range(series.iter().flat_map(|(_, _, s)| s.buckets.iter().map(|b| rate(b.queries))).filter(|v| *v > 0.0));
    let floor = y.start;
    let mut c = time_panel(&panels[2], t_end, y, ("time (s)", "queries/s (log)"))?;
    draw_policy_lines(&mut c, series, |s| {
        s.buckets.iter().enumerate().map(|(i, b)| (at(i), rate(b.queries).max(floor))).collect()
    })
}

/// Writes `<name>-clients.png` and `.svg` into `dir`.
///
/// # Errors
///
/// If a file cannot be written.
pub fn write(dir: &Path, name: &str, series: &[(String, String, TimeSeries)]) -> Result<()> {
    register_font();
    let title = format!("{name}: offered load, retries, goodput and queries over time");
    let stem = dir.join(format!("{name}-clients"));
    super::png::render(&stem.with_extension("png"), (1200, 950), |root| clients_plot(root, &title, series))?;
    let svg = stem.with_extension("svg");
    let root = SVGBackend::new(&svg, (1200, 950)).into_drawing_area();
    clients_plot(&root, &title, series)?;
    root.present().map_err(err)
}
