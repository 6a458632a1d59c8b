//! The run's loss log: `loss.csv` (one row per optimizer step) and its picture `loss.svg`.
//! On resume, rows past the checkpoint's step (written after it, by the run that stopped)
//! are dropped, so the log always matches the weights.

use super::plot::loss_svg;
use super::trainer::StepReport;
use std::io::Write;
use std::path::{Path, PathBuf};

const HEADER: &str = "step,loss,instance_loss,prior_loss,lr,grad_norm,seconds";

pub struct LossLog {
    csv: PathBuf,
    svg: PathBuf,
    points: Vec<(u64, f64)>,
    title: String,
}

impl LossLog {
    /// Open the run's log, keeping rows up to `step`.
    pub fn open(run: &Path, step: u64, title: String) -> Result<LossLog, String> {
        let csv = run.join("loss.csv");
        let mut rows = Vec::new();
        let mut points = Vec::new();
        if let Ok(text) = std::fs::read_to_string(&csv) {
            for line in text.lines().skip(1) {
                let mut fields = line.split(',');
                let (Some(s), Some(l)) = (fields.next(), fields.next()) else {
                    continue;
                };
                let (Ok(s), Ok(l)) = (s.parse::<u64>(), l.parse::<f64>()) else {
                    continue;
                };
                if s <= step {
                    rows.push(line.to_string());
                    points.push((s, l));
                }
            }
        }
        let mut text = format!("{HEADER}\n");
        for r in rows {
            text.push_str(&r);
            text.push('\n');
        }
        crate::encode::shards::write_atomically(&csv, text.as_bytes())?;
        Ok(LossLog {
            svg: run.join("loss.svg"),
            csv,
            points,
            title,
        })
    }

    pub fn append(&mut self, r: &StepReport, seconds: f64) -> Result<(), String> {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
        let norm = if r.grad_norm.is_finite() {
            format!("{:.6}", r.grad_norm)
        } else {
            String::new()
        };
        let line = format!(
            "{},{:.6},{:.6},{},{:.3e},{norm},{seconds:.3}\n",
            r.step,
            r.loss,
            r.instance,
            opt(r.prior),
            r.lr
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.csv)
            .map_err(|e| format!("{}: {e}", self.csv.display()))?;
        f.write_all(line.as_bytes())
            .map_err(|e| format!("{}: {e}", self.csv.display()))?;
        self.points.push((r.step, r.loss));
        Ok(())
    }

    /// Redraw `loss.svg`.
    pub fn draw(&self) -> Result<(), String> {
        crate::encode::shards::write_atomically(
            &self.svg,
            loss_svg(&self.points, &self.title).as_bytes(),
        )
    }
}
