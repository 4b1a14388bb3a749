//! `latency.svg`: p50 and p99 latency against offered load, both axes
//! logarithmic, one line per system; saturated rates are left out.

use std::path::Path;

use plotters::prelude::*;

use crate::{Context, Measured};

/// The systems drawn, with their colours.
const LINES: [(&str, RGBColor); 5] = [
    ("direct", RGBColor(120, 120, 120)),
    ("forwarder", RGBColor(31, 119, 180)),
    ("p402-passthrough", RGBColor(44, 160, 44)),
    ("p402-budget", RGBColor(23, 110, 23)),
    ("litellm", RGBColor(214, 39, 40)),
];

pub fn draw(path: &Path, all: &[Measured], context: &Context) {
    let root = SVGBackend::new(path, (1100, 480)).into_drawing_area();
    root.fill(&WHITE).expect("fill");
    let title = format!(
        "Latency against offered load, one run on {} cores ({}), {}",
        context.cpus, context.model, context.date
    );
    let root = root.titled(&title, ("sans-serif", 18)).expect("title");
    let panels = root.split_evenly((1, 2));
    let points = |key: &str, p: f64| -> Vec<(f64, f64)> {
        all.iter()
            .find(|m| m.key == key)
            .map(|m| {
                m.rates
                    .iter()
                    .filter(|(_, run)| !run.saturated && !run.samples.is_empty())
                    .map(|(rate, run)| (*rate, run.latency(p) as f64 / 1e3))
                    .collect()
            })
            .unwrap_or_default()
    };
    let all_points: Vec<(f64, f64)> = LINES
        .iter()
        .flat_map(|(key, _)| [points(key, 0.5), points(key, 0.99)].concat())
        .collect();
    let max_rate = all_points.iter().map(|p| p.0).fold(100.0, f64::max);
    let min_rate = all_points.iter().map(|p| p.0).fold(max_rate, f64::min);
    let max_us = all_points.iter().map(|p| p.1).fold(100.0, f64::max);
    let min_us = all_points.iter().map(|p| p.1).fold(max_us, f64::min);
    for (panel, (p, name)) in panels.iter().zip([(0.5, "p50"), (0.99, "p99")]) {
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{name} latency"), ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(
                (min_rate * 0.8..max_rate * 1.25).log_scale(),
                // Headroom above the data for the legend.
                (min_us * 0.7..max_us * 15.0).log_scale(),
            )
            .expect("chart");
        chart
            .configure_mesh()
            .x_desc("offered load, requests/s")
            .y_desc(format!("{name} latency, µs"))
            .light_line_style(RGBColor(242, 242, 242))
            .y_labels(12)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .expect("mesh");
        for (key, colour) in LINES {
            let line = points(key, p);
            if line.is_empty() {
                continue;
            }
            let label = all
                .iter()
                .find(|m| m.key == key)
                .map(|m| m.name.clone())
                .unwrap_or_default();
            chart
                .draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))
                .expect("line")
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(
                    line.into_iter()
                        .map(|xy| Circle::new(xy, 3, colour.filled())),
                )
                .expect("points");
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()
            .expect("legend");
    }
    root.present().expect("write the plot");
}
