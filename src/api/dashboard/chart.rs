//! Spend over time as an SVG drawn here, on the server: a stacked bar per
//! hour or day, one colour per provider. Drawn in Rust rather than with a
//! charting library in the page so that the binary ships no third-party
//! JavaScript, the page needs nothing from outside the machine, and the
//! chart's numbers come from the same ledger sums as the report's: the
//! hourly sums (`store::rollup`), so that drawing 30 days costs the same at
//! any size of ledger.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, DurationRound, Local, TimeZone, Utc};

use crate::money::Usd;
use crate::store::rollup::Part;

/// The colours of the providers, in the order they first appear; the same
/// provider keeps its colour across refreshes when the set does not change.
const PALETTE: [&str; 10] = [
    "#2f6fdf", "#e8793a", "#35a36b", "#c44f8a", "#8a63d2", "#c9a227", "#2aa9b8", "#d94848",
    "#6b8e23", "#7a7a7a",
];

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 64.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;

/// How the chart is bucketed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Hour,
    Day,
}

impl Step {
    fn duration(self) -> Duration {
        match self {
            Step::Hour => Duration::hours(1),
            Step::Day => Duration::days(1),
        }
    }

    /// The start of the bucket `time` falls in, on the machine's clock.
    fn floor(self, time: DateTime<Utc>) -> DateTime<Utc> {
        let local = time.with_timezone(&Local);
        let floored = match self {
            Step::Hour => local.duration_trunc(Duration::hours(1)).ok(),
            Step::Day => local
                .date_naive()
                .and_hms_opt(0, 0, 0)
                .and_then(|t| Local.from_local_datetime(&t).earliest()),
        };
        floored.map_or(time, |t| t.with_timezone(&Utc))
    }

    fn label(self, time: DateTime<Utc>) -> String {
        let local = time.with_timezone(&Local);
        match self {
            Step::Hour => local.format("%H:00").to_string(),
            Step::Day => local.format("%b %d").to_string(),
        }
    }
}

/// The SVG of spend per bucket by provider, from the ledger's `parts`
/// since `since`.
pub fn spend(parts: &[Part], since: DateTime<Utc>, now: DateTime<Utc>, step: Step) -> String {
    let first = step.floor(since);
    let mut buckets: Vec<DateTime<Utc>> = Vec::new();
    let mut at = first;
    while at <= now && buckets.len() < 400 {
        buckets.push(at);
        at += step.duration();
    }
    // bucket index -> provider -> spend
    let mut sums: Vec<BTreeMap<String, Usd>> = vec![BTreeMap::new(); buckets.len()];
    let mut providers: Vec<String> = Vec::new();
    for part in parts {
        if part.time < since || part.sums.cost_nanos == 0 {
            continue;
        }
        // The buckets are in time order.
        let Ok(index) = buckets.binary_search(&step.floor(part.time)) else {
            continue;
        };
        let provider = &part.dims.provider;
        if !providers.contains(provider) {
            providers.push(provider.clone());
        }
        *sums[index].entry(provider.clone()).or_insert(Usd::ZERO) +=
            Usd::from_nanos(part.sums.cost_nanos);
    }
    providers.sort();
    render(&buckets, &sums, &providers, step)
}

/// Text made safe to place in the SVG (provider names come from the
/// config, but the page inserts this markup into itself).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn render(
    buckets: &[DateTime<Utc>],
    sums: &[BTreeMap<String, Usd>],
    providers: &[String],
    step: Step,
) -> String {
    let totals: Vec<f64> = sums
        .iter()
        .map(|b| b.values().map(|u| u.to_dollars()).sum())
        .collect();
    let max = totals.iter().copied().fold(0.0, f64::max);
    let scale = nice_ceiling(max);
    let plot_h = HEIGHT - TOP - BOTTOM;
    let plot_w = WIDTH - LEFT - 8.0;
    let slot = plot_w / buckets.len().max(1) as f64;
    let bar = (slot * 0.7).max(1.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {h}" role="img" aria-label="Spend over time by provider" font-family="system-ui, sans-serif" font-size="11">"#,
        h = HEIGHT + 22.0
    );
    // Grid and axis labels.
    for i in 0..=4 {
        let value = scale * f64::from(i) / 4.0;
        let y = TOP + plot_h - plot_h * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end" fill="#555">${value}</text>"##,
            x2 = WIDTH - 8.0,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            value = format_dollars(value)
        );
    }
    let every = (buckets.len() / 8).max(1);
    for (i, (start, sum)) in buckets.iter().zip(sums).enumerate() {
        let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
        let mut y = TOP + plot_h;
        for provider in providers {
            let Some(amount) = sum.get(provider) else {
                continue;
            };
            let height = if scale > 0.0 {
                plot_h * amount.to_dollars() / scale
            } else {
                0.0
            };
            y -= height;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{height:.1}" fill="{color}"><title>{label} {provider}: ${dollars}</title></rect>"#,
                color = color(providers, provider),
                label = step.label(*start),
                provider = escape(provider),
                dollars = format_dollars(amount.to_dollars())
            );
        }
        if i % every == 0 {
            let _ = write!(
                svg,
                r##"<text x="{cx:.1}" y="{ly}" text-anchor="middle" fill="#555">{label}</text>"##,
                cx = x + bar / 2.0,
                ly = HEIGHT - 10.0,
                label = step.label(*start)
            );
        }
    }
    // Legend.
    let mut lx = LEFT;
    for provider in providers {
        let _ = write!(
            svg,
            r##"<rect x="{lx}" y="{ly}" width="10" height="10" fill="{color}"/><text x="{tx}" y="{ty}" fill="#333">{provider}</text>"##,
            ly = HEIGHT + 6.0,
            color = color(providers, provider),
            tx = lx + 14.0,
            ty = HEIGHT + 15.0,
            provider = escape(provider),
        );
        lx += 24.0 + 7.0 * provider.len() as f64;
    }
    if providers.is_empty() {
        let _ = write!(
            svg,
            r##"<text x="{x}" y="{y}" text-anchor="middle" fill="#888">no spend in this period</text>"##,
            x = LEFT + plot_w / 2.0,
            y = TOP + plot_h / 2.0
        );
    }
    svg.push_str("</svg>");
    svg
}

fn color(providers: &[String], provider: &str) -> &'static str {
    let index = providers.iter().position(|p| p == provider).unwrap_or(0);
    PALETTE[index % PALETTE.len()]
}

/// A round number at or above `max`, for the axis (1, 2 or 5 times a power
/// of ten).
fn nice_ceiling(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * power)
}

fn format_dollars(value: f64) -> String {
    if value == 0.0 {
        "0".to_string()
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        let text = format!("{value:.6}");
        text.trim_end_matches('0').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(provider: &str, time: DateTime<Utc>, nanos: i64) -> Part {
        let mut entry = crate::store::LedgerEntry::new(format!("req_{nanos}"), provider.into());
        entry.time = time;
        entry.model = Some("m".into());
        entry.input_tokens = 1;
        entry.output_tokens = 1;
        entry.cost_nanos = nanos;
        entry.direct_nanos = nanos;
        Part {
            time,
            dims: crate::store::rollup::Dims::of(&entry),
            sums: crate::store::rollup::Sums::of(&entry),
        }
    }

    #[test]
    fn bars_stack_by_provider_and_free_answers_draw_nothing() {
        let now = Utc::now();
        let since = now - Duration::hours(3);
        let svg = spend(
            &[
                entry("openai", now - Duration::minutes(30), 2_000_000),
                entry("anthropic", now - Duration::minutes(20), 1_000_000),
                entry("cache", now - Duration::minutes(10), 0),
                entry("openai", now - Duration::days(3), 5_000_000),
            ],
            since,
            now,
            Step::Hour,
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<title>").count(), 2, "{svg}");
        assert!(svg.contains("openai: $0.002"), "{svg}");
        assert!(svg.contains("anthropic: $0.001"), "{svg}");
        assert!(!svg.contains("cache"), "{svg}");
        let odd = spend(
            &[entry("<b>&", now - Duration::minutes(5), 1)],
            since,
            now,
            Step::Hour,
        );
        assert!(
            odd.contains("&lt;b&gt;&amp;") && !odd.contains("<b>"),
            "{odd}"
        );
        let empty = spend(&[], since, now, Step::Day);
        assert!(empty.contains("no spend in this period"));
    }

    #[test]
    fn the_axis_ends_on_a_round_number() {
        assert_eq!(nice_ceiling(0.0034), 0.005);
        assert_eq!(nice_ceiling(0.02), 0.02);
        assert_eq!(nice_ceiling(7.5), 10.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }
}
