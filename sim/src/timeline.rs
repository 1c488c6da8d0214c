//! A hand-written SVG timeline of a run's [`History`]: one row per execution with one bar per
//! lease coloured by worker, fault spans per host above, crosses for refused stale operations.
//! Leases of one execution whose ownership overlaps are pushed onto a second lane of the row,
//! outlined in red and dashed, and the overlap itself is shaded (`class="overlap"`), so double
//! ownership is visible at a glance.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use ff_core::TimestampMs;

use crate::history::{FaultKind, History, LeaseGrant, LeaseRecord, Overlap, SignalRecord, StaleOp};

/// Width of the label column, px.
const LABEL_W: f64 = 200.0;
/// Width of the plot area, px.
const PLOT_W: f64 = 1100.0;
/// Height of one lease bar, px.
const BAR_H: f64 = 10.0;
/// Vertical pitch of one lane, px.
const LANE_H: f64 = 13.0;
/// Height of one fault row, px.
const FAULT_ROW_H: f64 = 14.0;
/// Lanes per execution row at most (deeper overlaps share the last lane).
const LANES_MAX: usize = 4;
/// Axis ticks at most.
const TICKS_MAX: i64 = 14;

/// Renders the history as a standalone SVG document titled `title`.
pub fn timeline_svg(history: &History, title: &str) -> String {
    let layout = Layout::new(history);
    let mut svg = String::new();
    let fault_hosts = fault_hosts(history);
    let rows_top = 60.0 + FAULT_ROW_H * fault_hosts.len() as f64 + 10.0;
    let rows = execution_rows(history);
    let rows_h: f64 = rows.iter().map(|r| r.height()).sum();
    let height = rows_top + rows_h + 70.0;
    let width = LABEL_W + PLOT_W + 20.0;
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" font-size="10">"#
    );
    svg.push_str(concat!(
        r##"<defs><pattern id="hatch" width="4" height="4" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">"##,
        r##"<line x1="0" y1="0" x2="0" y2="4" stroke="#c00" stroke-width="2"/></pattern></defs>"##,
        "\n"
    ));
    let _ = writeln!(svg, r#"<text x="4" y="14" font-size="12">{}</text>"#, escape(title));
    axis(&mut svg, &layout, rows_top + rows_h);
    faults(&mut svg, history, &layout, &fault_hosts, rows_top + rows_h);
    let marks = Marks::new(history);
    let mut y = rows_top;
    for row in &rows {
        execution_row(&mut svg, history, &layout, &marks, row, y);
        y += row.height();
    }
    let workers = marks.workers;
    legend(&mut svg, &workers, y + 16.0);
    svg.push_str("</svg>\n");
    svg
}

/// Maps server ms onto the plot's x axis.
struct Layout {
    t0: TimestampMs,
    span_ms: TimestampMs,
}

impl Layout {
    fn new(h: &History) -> Self {
        let mut t1 = h.origin_ms + 1;
        for l in &h.leases {
            t1 = t1.max(l.owned_until_ms()).max(l.end().0);
        }
        for f in &h.faults {
            t1 = t1.max(f.end_ms.unwrap_or(f.start_ms));
        }
        for s in &h.stale_ops {
            t1 = t1.max(s.at_ms + 1);
        }
        Self { t0: h.origin_ms, span_ms: (t1 - h.origin_ms).max(1) }
    }

    fn x(&self, t: TimestampMs) -> f64 {
        LABEL_W + (t - self.t0).clamp(0, self.span_ms) as f64 * PLOT_W / self.span_ms as f64
    }

    /// Bar from `a` to `b`, at least one pixel wide.
    fn span(&self, a: TimestampMs, b: TimestampMs) -> (f64, f64) {
        let x = self.x(a);
        (x, (self.x(b) - x).max(1.0))
    }
}

/// One execution's row: its leases and the lane each sits on.
struct Row {
    leases: Vec<(usize, usize)>,
    lanes: usize,
}

impl Row {
    fn height(&self) -> f64 {
        self.lanes as f64 * LANE_H + 4.0
    }
}

/// Rows in order of first grant; a lease goes on the first lane free at its start.
fn execution_rows(h: &History) -> Vec<Row> {
    let mut rows: Vec<Row> = h
        .leases_by_execution()
        .into_values()
        .map(|indices| {
            let mut lane_ends: Vec<TimestampMs> = Vec::new();
            let mut leases = Vec::with_capacity(indices.len());
            for i in indices {
                let lease = &h.leases[i];
                let free = lane_ends.iter().position(|&end| end <= lease.start_ms);
                let lane = match free {
                    Some(lane) => lane,
                    None if lane_ends.len() < LANES_MAX => {
                        lane_ends.push(TimestampMs::MIN);
                        lane_ends.len() - 1
                    }
                    None => LANES_MAX - 1,
                };
                lane_ends[lane] = lane_ends[lane].max(lease.owned_until_ms());
                leases.push((i, lane));
            }
            Row { lanes: lane_ends.len().max(1), leases }
        })
        .collect();
    rows.sort_by_key(|r| r.leases.first().map(|&(i, _)| (h.leases[i].start_ms, i)));
    rows
}

fn axis(svg: &mut String, layout: &Layout, bottom: f64) {
    let step =
        [100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 60_000, 120_000, 300_000, 600_000]
            .into_iter()
            .find(|s| layout.span_ms / s <= TICKS_MAX)
            .unwrap_or(3_600_000);
    let mut t = 0;
    while t <= layout.span_ms {
        let x = layout.x(layout.t0 + t);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="34" x2="{x:.1}" y2="{bottom:.1}" stroke="#ddd"/><text x="{x:.1}" y="30" text-anchor="middle">{:.1}s</text>"##,
            t as f64 / 1000.0
        );
        t += step;
    }
}

/// Hosts that suffered a fault, the server first.
fn fault_hosts(h: &History) -> Vec<String> {
    let hosts: BTreeSet<&str> = h.faults.iter().filter_map(|f| f.hosts.first()).map(String::as_str).collect();
    let mut out: Vec<String> = hosts.into_iter().filter(|&n| n != "server").map(str::to_owned).collect();
    if h.faults.iter().any(|f| f.kind == FaultKind::ClockJump) {
        out.insert(0, "server".to_owned());
    }
    out
}

fn fault_colour(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::Crash => "#222",
        FaultKind::Partition => "#e08000",
        FaultKind::Hold => "#8040c0",
        FaultKind::ClockJump => "#0090a0",
        FaultKind::Stall => "#999",
    }
}

/// Fault spans on their host's row, and a faint line down the chart where each one starts.
fn faults(svg: &mut String, h: &History, layout: &Layout, hosts: &[String], bottom: f64) {
    for (r, host) in hosts.iter().enumerate() {
        let y = 44.0 + FAULT_ROW_H * r as f64;
        let _ = writeln!(svg, r#"<text x="4" y="{:.1}">fault {}</text>"#, y + 9.0, escape(host));
    }
    for f in &h.faults {
        let Some(r) = f.hosts.first().and_then(|host| hosts.iter().position(|n| n == host)) else {
            continue;
        };
        let y = 44.0 + FAULT_ROW_H * r as f64;
        let end = f.end_ms.unwrap_or(layout.t0 + layout.span_ms);
        let (x, w) = layout.span(f.start_ms, end);
        let colour = fault_colour(f.kind);
        let _ = writeln!(
            svg,
            r#"<rect class="fault" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{BAR_H}" fill="{colour}" fill-opacity="0.7"><title>{:?} {} [{}, {}) ms</title></rect>"#,
            f.kind,
            escape(&f.hosts.join("↔")),
            f.start_ms - layout.t0,
            end - layout.t0
        );
        let _ = writeln!(
            svg,
            r#"<line class="fault-line" x1="{x:.1}" y1="{y:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="{colour}" stroke-opacity="0.25"/>"#
        );
    }
}

/// Worker name → colour, in name order (hues spread by the golden angle).
fn worker_colours(h: &History) -> BTreeMap<&str, String> {
    let names: BTreeSet<&str> = h.leases.iter().map(|l| l.worker.as_str()).collect();
    names.into_iter().enumerate().map(|(i, n)| (n, format!("hsl({}, 65%, 50%)", (i * 137) % 360))).collect()
}

/// What is drawn on top of the lease bars, grouped once for every row.
struct Marks<'h> {
    workers: BTreeMap<&'h str, String>,
    /// Overlaps by the index of their earlier lease.
    overlaps: BTreeMap<usize, Vec<Overlap>>,
    /// Leases in any overlap.
    doubled: BTreeSet<usize>,
    stale: BTreeMap<&'h ff_core::ExecutionId, Vec<&'h StaleOp>>,
    signals: BTreeMap<&'h ff_core::ExecutionId, Vec<&'h SignalRecord>>,
}

impl<'h> Marks<'h> {
    fn new(h: &'h History) -> Self {
        let mut overlaps = BTreeMap::<usize, Vec<Overlap>>::new();
        let mut doubled = BTreeSet::new();
        for o in h.overlaps() {
            doubled.extend([o.first, o.second]);
            overlaps.entry(o.first).or_default().push(o);
        }
        let mut stale = BTreeMap::<&ff_core::ExecutionId, Vec<&StaleOp>>::new();
        for s in &h.stale_ops {
            stale.entry(&s.execution_id).or_default().push(s);
        }
        let mut signals = BTreeMap::<&ff_core::ExecutionId, Vec<&SignalRecord>>::new();
        for s in &h.signals {
            signals.entry(&s.execution_id).or_default().push(s);
        }
        Self { workers: worker_colours(h), overlaps, doubled, stale, signals }
    }
}

fn execution_row(svg: &mut String, h: &History, layout: &Layout, marks: &Marks<'_>, row: &Row, top: f64) {
    let Some(&(first, _)) = row.leases.first() else { return };
    let id = &h.leases[first].execution_id;
    let _ =
        writeln!(svg, r#"<text x="4" y="{:.1}">{}</text>"#, top + BAR_H, escape(&short_id(&id.to_string())));
    let row_overlaps = row.leases.iter().filter_map(|(i, _)| marks.overlaps.get(i)).flatten();
    for o in row_overlaps {
        let (x, w) = layout.span(o.from_ms, o.until_ms);
        let _ = writeln!(
            svg,
            r##"<rect class="overlap" x="{x:.1}" y="{top:.1}" width="{w:.1}" height="{:.1}" fill="url(#hatch)" stroke="#c00"><title>double ownership [{}, {}) ms</title></rect>"##,
            row.height() - 2.0,
            o.from_ms - layout.t0,
            o.until_ms - layout.t0
        );
    }
    for &(i, lane) in &row.leases {
        let lease = &h.leases[i];
        let y = top + 2.0 + lane as f64 * LANE_H;
        let colour = marks.workers.get(lease.worker.as_str()).map_or("#888", String::as_str);
        lease_bar(svg, layout, lease, y, colour, lane > 0 || marks.doubled.contains(&i));
    }
    for s in marks.signals.get(id).into_iter().flatten() {
        let (x, y) = (layout.x(s.at_ms), top + 2.0 + BAR_H / 2.0);
        let fill = if s.duplicate { "none" } else { "#06c" };
        let _ = writeln!(
            svg,
            r##"<path class="signal" d="M{x:.1} {:.1}L{:.1} {y:.1}L{x:.1} {:.1}L{:.1} {y:.1}Z" fill="{fill}" stroke="#06c"><title>{}signal at {} ms: {}</title></path>"##,
            y - 4.0,
            x + 4.0,
            y + 4.0,
            x - 4.0,
            if s.duplicate { "duplicate " } else { "" },
            s.at_ms - layout.t0,
            escape(&s.outcome)
        );
    }
    for s in marks.stale.get(id).into_iter().flatten() {
        let (x, y) = (layout.x(s.at_ms), top + 2.0 + BAR_H / 2.0);
        let _ = writeln!(
            svg,
            r##"<path class="stale" d="M{:.1} {:.1}L{:.1} {:.1}M{:.1} {:.1}L{:.1} {:.1}" stroke="#c00" stroke-width="1.5"><title>{} refused for {} e{} at {} ms</title></path>"##,
            x - 3.0,
            y - 3.0,
            x + 3.0,
            y + 3.0,
            x - 3.0,
            y + 3.0,
            x + 3.0,
            y - 3.0,
            escape(&s.op),
            escape(&s.worker),
            s.epoch,
            s.at_ms - layout.t0
        );
    }
}

/// One lease: its live bar, then (hatched) any time its holder acted after its right ended.
fn lease_bar(svg: &mut String, layout: &Layout, lease: &LeaseRecord, y: f64, colour: &str, double: bool) {
    let (end, how) = lease.end();
    let (x, w) = layout.span(lease.start_ms, end);
    let style = if double { r##" stroke="#c00" stroke-width="2" stroke-dasharray="3,2""## } else { "" };
    let class = if double { "lease double" } else { "lease" };
    let _ = writeln!(
        svg,
        r#"<rect class="{class}" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{BAR_H}" fill="{colour}"{style}><title>{} e{} {}{} [{}, {}) ms, ended by {how:?}</title></rect>"#,
        lease.execution_id,
        lease.epoch,
        escape(&lease.worker),
        match lease.grant {
            LeaseGrant::Claim => "",
            LeaseGrant::Reclaim => " (reclaim)",
            LeaseGrant::Resume => " (resumed)",
        },
        lease.start_ms - layout.t0,
        end - layout.t0
    );
    if lease.overstayed() {
        let until = lease.owned_until_ms();
        let (ox, ow) = layout.span(lease.live_until_ms(), until);
        let _ = writeln!(
            svg,
            r##"<rect class="overstay" x="{ox:.1}" y="{y:.1}" width="{ow:.1}" height="{BAR_H}" fill="url(#hatch)" stroke="#c00"><title>{} acted after its lease ended, until {} ms</title></rect>"##,
            escape(&lease.worker),
            until - layout.t0
        );
    }
}

fn legend(svg: &mut String, workers: &BTreeMap<&str, String>, y: f64) {
    let mut x = 4.0;
    for (name, colour) in workers {
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="10" height="10" fill="{colour}"/><text x="{:.1}" y="{y:.1}">{}</text>"#,
            y - 9.0,
            x + 13.0,
            escape(name)
        );
        x += 20.0 + 7.0 * name.len() as f64;
    }
    let _ = writeln!(
        svg,
        r##"<text x="4" y="{:.1}">faults: crash (black), partition (orange), hold (purple), clock jump (teal), stall (grey); red ×: stale op refused; blue diamond: signal (hollow: duplicate); red hatch: double ownership or action after the lease ended</text>"##,
        y + 18.0
    );
}

/// `{fp:N}:` and the first 8 hex digits of the uuid.
fn short_id(id: &str) -> String {
    match id.split_once("}:") {
        Some((tag, uuid)) => format!("{tag}}}:{}", uuid.get(..8).unwrap_or(uuid)),
        None => id.to_owned(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Release;
    use ff_core::ExecutionId;

    #[test]
    fn overlapping_leases_are_drawn_on_a_second_lane_with_an_overlap_mark() {
        let id = ExecutionId::from_parts(1, uuid::Uuid::from_u64_pair(3, 4));
        let mut h = History::default();
        h.granted(&id, "worker0", 1, LeaseGrant::Claim, 0, 3_000);
        h.granted(&id, "worker1", 2, LeaseGrant::Reclaim, 3_500, 6_500);
        h.released(&id, 1, 5_000, Release::Complete);
        h.refused(&id, 2, "complete", 5_500);
        let svg = timeline_svg(&h, "t");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches(r#"class="lease"#).count(), 2);
        assert_eq!(svg.matches(r#"class="lease double""#).count(), 2);
        assert_eq!(svg.matches(r#"class="overlap""#).count(), 1);
        assert_eq!(svg.matches(r#"class="overstay""#).count(), 1);
        assert_eq!(svg.matches(r#"class="stale""#).count(), 1);
    }

    #[test]
    fn short_ids_keep_the_partition_tag() {
        assert_eq!(short_id("{fp:3}:e376a9b1-a203-6b72"), "{fp:3}:e376a9b1");
    }
}
