//! `--plot FILE.svg`: page tables per process and wall time against the
//! number of processes, log scales, one line per contender.

use std::path::Path;

use plotters::prelude::*;

use super::contender::Kind;
use super::report::{ProcsRow, Report};
use super::BenchError;

/// The points of `kind`: (processes, value).
fn points(rows: &[&ProcsRow], kind: Kind, value: fn(&ProcsRow) -> f64) -> Vec<(f64, f64)> {
    let mut p: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.contender == kind)
        .map(|r| (r.procs as f64, value(r).max(0.01)))
        .collect();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    p
}

fn chart(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    rows: &[&ProcsRow],
    title: &str,
    y_desc: &str,
    value: fn(&ProcsRow) -> f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let xs = rows.iter().map(|r| r.procs as f64);
    let x_max = xs.fold(10.0, f64::max) * 1.5;
    let y_max = rows.iter().map(|r| value(r)).fold(1.0, f64::max) * 2.0;
    let mut c = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((5.0..x_max).log_scale(), (0.01..y_max).log_scale())?;
    c.configure_mesh()
        .x_desc("processes")
        .y_desc(y_desc)
        .draw()?;
    for (i, kind) in Kind::ALL.iter().enumerate() {
        let p = points(rows, *kind, value);
        if p.is_empty() {
            continue;
        }
        let color = Palette99::pick(i).to_rgba();
        c.draw_series(LineSeries::new(p.clone(), color.stroke_width(2)))?
            .label(kind.label())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        c.draw_series(p.into_iter().map(|xy| Circle::new(xy, 3, color.filled())))?;
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
