//! `--plot FILE.svg`: page tables per process and wall time against the
//! number of processes, log scales, one line per contender.

use std::path::Path;

use plotters::prelude::*;

use super::contender::Kind;
use super::report::{ProcsRow, Report};
use super::BenchError;

/// The points of `kind` with regions of `size` bytes: (processes, value).
/// A log axis has no zero: values that are not positive are left out (the
/// caption says how many), never drawn at the axis' floor.
fn points(
    rows: &[&ProcsRow],
    kind: Kind,
    size: u64,
    value: fn(&ProcsRow) -> f64,
) -> (Vec<(f64, f64)>, usize) {
    let mine = rows
        .iter()
        .filter(|r| r.contender == kind && r.size == size);
    let left_out = mine.clone().filter(|r| value(r) <= 0.0).count();
    let mut p: Vec<(f64, f64)> = mine
        .filter(|r| value(r) > 0.0)
        .map(|r| (r.procs as f64, value(r)))
        .collect();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    (p, left_out)
}

/// "1 GiB", "16 GiB", "512 MiB".
fn size_label(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

fn chart(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    rows: &[&ProcsRow],
    title: &str,
    y_desc: &str,
    value: fn(&ProcsRow) -> f64,
) -> Result<(), Box<dyn std::error::Error>> {
    // Each region size is its own workload: its points are joined only
    // with each other (the procs phase's 1 GiB, the scale phase's 16 GiB).
    let mut sizes: Vec<u64> = rows.iter().map(|r| r.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let left_out: usize = Kind::ALL
        .iter()
        .flat_map(|k| sizes.iter().map(move |s| (k, s)))
        .map(|(k, s)| points(rows, *k, *s, value).1)
        .sum();
    let caption = if left_out > 0 {
        let values = if left_out == 1 { "value" } else { "values" };
        format!("{title} ({left_out} zero {values} not drawn)")
    } else {
        title.to_string()
    };
    let positive = rows.iter().map(|r| value(r)).filter(|v| *v > 0.0);
    let y_min = positive.clone().fold(f64::INFINITY, f64::min).min(1.0) / 2.0;
    let y_max = positive.fold(1.0, f64::max) * 2.0;
    let x_max = rows.iter().map(|r| r.procs as f64).fold(10.0, f64::max) * 1.5;
    let mut c = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((5.0..x_max).log_scale(), (y_min..y_max).log_scale())?;
    c.configure_mesh()
        .x_desc("processes")
        .y_desc(y_desc)
        .draw()?;
    for (i, kind) in Kind::ALL.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        for (j, size) in sizes.iter().enumerate() {
            let (p, _) = points(rows, *kind, *size, value);
            if p.is_empty() {
                continue;
            }
            let label = if sizes.len() > 1 {
                format!("{}, {}", kind.label(), size_label(*size))
            } else {
                kind.label().to_string()
            };
            // The first size draws solid lines and dots; the others
            // triangles, so that a lone point is not read as a line's end.
            let solid = j == 0;
            c.draw_series(LineSeries::new(p.clone(), color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| {
                    if solid {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                            .into_dyn()
                    } else {
                        TriangleMarker::new((x + 8, y), 5, color.filled()).into_dyn()
                    }
                });
            if solid {
                c.draw_series(p.into_iter().map(|xy| Circle::new(xy, 3, color.filled())))?;
            } else {
                c.draw_series(
                    p.into_iter()
                        .map(|xy| TriangleMarker::new(xy, 5, color.filled())),
                )?;
            }
        }
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}

/// Draws `report`'s procs and scale rows into `path`.
pub fn draw(report: &Report, path: &Path) -> Result<(), BenchError> {
    let rows: Vec<&ProcsRow> = report.procs.iter().chain(&report.scale).collect();
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(600);
        chart(&left, &rows, "page tables per process", "KiB", |r| {
            r.page_tables_kib.median
        })?;
        chart(
            &right,
            &rows,
            "wall time: all attach and read",
            "seconds",
            |r| r.wall_s.median,
        )?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| BenchError::Setup(format!("drawing {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Spread;

    fn row(kind: Kind, procs: usize, size: u64, kib: f64) -> ProcsRow {
        ProcsRow {
            contender: kind,
            procs,
            size,
            wall_s: Spread::of(&[1.0]),
            wall_vs_memfd_hugetlb: None,
            page_tables_kib: Spread::of(&[kib]),
        }
    }

    #[test]
    fn each_size_is_its_own_line_and_zeros_are_left_out() {
        let k = Kind::ALL[0];
        let rows = [
            row(k, 1000, 1 << 30, 4.0),
            row(k, 10, 1 << 30, 0.0),
            row(k, 10_000, 16 << 30, 4.0),
            row(Kind::ALL[1], 1000, 1 << 30, 8.0),
        ];
        let refs: Vec<&ProcsRow> = rows.iter().collect();
        let kib = |r: &ProcsRow| r.page_tables_kib.median;
        assert_eq!(points(&refs, k, 1 << 30, kib), (vec![(1000.0, 4.0)], 1));
        assert_eq!(points(&refs, k, 16 << 30, kib), (vec![(10_000.0, 4.0)], 0));
        assert_eq!(size_label(16 << 30), "16 GiB");
        assert_eq!(size_label(512 << 20), "512 MiB");
    }
}
