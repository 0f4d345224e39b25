//! The bench's figures: the table of query times, the processes' peak
//! memory, the time and memory floors as PASS/FAIL, and the JSON file
//! ([`Report`]).

use std::collections::BTreeMap;
use std::io::Write;

use super::sampler::ProcPeak;
use super::{ClusterQuery, MEMORY_FLOOR, TIME_FLOOR, TpchArgs, WorkerReport};

pub(super) struct Report<'a> {
    pub(super) a: &'a TpchArgs,
    pub(super) queries: &'a [usize],
    pub(super) df: &'a WorkerReport,
    pub(super) cluster: &'a [ClusterQuery],
    pub(super) peaks: &'a [ProcPeak],
    /// The largest summed resident memory of the cluster's processes seen
    /// at a sample (every 200 ms while queries run).
    pub(super) sampled_total: u64,
    /// The resident pages of files the cluster's live processes map (their
    /// binary, shared libraries), counted once, at the end of the run.
    pub(super) file_union: u64,
    /// CPU time used by other processes of the machine during the run.
    pub(super) others_cpu_s: f64,
    pub(super) driver_pid: u32,
    pub(super) matched: &'a BTreeMap<usize, bool>,
}

impl Report<'_> {
    fn df_ms(&self, n: usize) -> Option<f64> {
        self.df
            .queries
            .iter()
            .find(|q| q.query == n && q.error.is_none())
            .map(|q| q.best_ms)
    }

    fn strata_ms(&self, n: usize) -> Option<f64> {
        self.cluster
            .iter()
            .find(|q| q.run.query == n && q.run.error.is_none())
            .map(|q| q.run.best_ms)
    }

    /// Totals over the queries both sides ran.
    fn totals(&self) -> (f64, f64) {
        self.queries
            .iter()
            .filter_map(|&n| Some((self.df_ms(n)?, self.strata_ms(n)?)))
            .fold((0.0, 0.0), |(d, s), (a, b)| (d + a, s + b))
    }

    /// The cluster's peak memory: the sum of the peaks of its processes
    /// alive at the end, or the largest sampled sum of their resident
    /// memory if that is larger (when executors were replaced during the
    /// run, theirs are in the samples only).
    fn cluster_peak(&self) -> u64 {
        self.live()
            .map(|p| p.peak_rss_bytes)
            .sum::<u64>()
            .max(self.sampled_total)
    }

    /// The cluster's peak memory with shared file pages counted once: each
    /// live process's peak less its file-backed pages, plus the union of
    /// those pages. (Every process maps the same `strata` binary; summing
    /// their peaks counts its code once per process.)
    fn cluster_peak_shared_once(&self) -> u64 {
        self.live()
            .map(|p| p.peak_rss_bytes.saturating_sub(p.rss_file_bytes))
            .sum::<u64>()
            + self.file_union
    }

    fn live(&self) -> impl Iterator<Item = &ProcPeak> {
        self.peaks.iter().filter(|p| !p.exited)
    }

    pub(super) fn print(&self) -> anyhow::Result<()> {
        use comfy_table::{CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "\nTPC-H SF {} — {} partitions; best of {} timed run(s) after a warm-up run; DataFusion: one process, target_partitions {}; Strata: manager + 2 agents + 2 executors (1 CPU, {} each) + driver",
            self.a.sf,
            self.a.partitions,
            self.a.runs,
            self.a.partitions,
            mib(self.a.executor_mem)
        )?;
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header(vec![
            "query",
            "DataFusion ms",
            "Strata ms",
            "Strata/DF",
            "rows",
            "results",
        ]);
        let fmt = |v: Option<f64>| v.map_or("error".to_owned(), |v| format!("{v:.1}"));
        for &n in self.queries {
            let d = self.df_ms(n);
            let s = self.strata_ms(n);
            let rows = self
                .cluster
                .iter()
                .find(|q| q.run.query == n)
                .map_or(0, |q| q.run.rows);
            t.add_row(vec![
                format!("q{n}"),
                fmt(d),
                fmt(s),
                match (d, s) {
                    (Some(d), Some(s)) if d > 0.0 => format!("{:.2}", s / d),
                    _ => "-".into(),
                },
                rows.to_string(),
                match self.matched.get(&n) {
                    Some(true) => "match".into(),
                    Some(false) => "MISMATCH".into(),
                    None => "-".into(),
                },
            ]);
        }
        let (d, s) = self.totals();
        t.add_row(vec![
            "total".to_owned(),
            format!("{d:.1}"),
            format!("{s:.1}"),
            if d > 0.0 {
                format!("{:.2}", s / d)
            } else {
                "-".into()
            },
            String::new(),
            String::new(),
        ]);
        for i in 1..=3 {
            if let Some(c) = t.column_mut(i) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
        writeln!(out, "{t}")?;

        let mut m = Table::new();
        m.load_preset(UTF8_FULL_CONDENSED);
        m.set_header(vec![
            "process",
            "pid",
            "peak RSS (VmHWM)",
            "RSS at end: anon",
            "file-backed",
        ]);
        for p in self.peaks {
            m.add_row(vec![
                if p.exited {
                    format!("{} (exited; not summed)", p.role)
                } else {
                    p.role.clone()
                },
                p.pid.to_string(),
                mib_bytes(p.peak_rss_bytes),
                mib_bytes(p.rss_anon_bytes),
                mib_bytes(p.rss_file_bytes),
            ]);
        }
        let sum = |f: fn(&ProcPeak) -> u64| self.live().map(f).sum::<u64>();
        m.add_row(vec![
            "Strata cluster, sum".to_owned(),
            String::new(),
            mib_bytes(self.live().map(|p| p.peak_rss_bytes).sum()),
            mib_bytes(sum(|p| p.rss_anon_bytes)),
            mib_bytes(sum(|p| p.rss_file_bytes)),
        ]);
        m.add_row(vec![
            "Strata cluster, summed RSS (sampled max)".to_owned(),
            String::new(),
            mib_bytes(self.sampled_total),
            String::new(),
            String::new(),
        ]);
        m.add_row(vec![
            "Strata cluster, shared file pages once".to_owned(),
            String::new(),
            mib_bytes(self.cluster_peak_shared_once()),
            String::new(),
            mib_bytes(self.file_union),
        ]);
        m.add_row(vec![
            "DataFusion (one process)".to_owned(),
            self.df.pid.to_string(),
            mib_bytes(self.df.peak_rss_bytes),
            mib_bytes(self.df.rss_anon_bytes),
            mib_bytes(self.df.rss_file_bytes),
        ]);
        for i in 2..=4 {
            if let Some(c) = m.column_mut(i) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
        writeln!(out, "{m}")?;
        for (ok, line) in self.checks() {
            writeln!(out, "{} {line}", if ok { "PASS" } else { "FAIL" })?;
        }
        Ok(())
    }

    fn checks(&self) -> Vec<(bool, String)> {
        let (d, s) = self.totals();
        let time_ratio = if d > 0.0 { s / d } else { f64::INFINITY };
        let (cm, dm) = (
            self.cluster_peak_shared_once() as f64,
            self.df.peak_rss_bytes as f64,
        );
        let mem_ratio = if dm > 0.0 { cm / dm } else { f64::INFINITY };
        let summed = self.cluster_peak() as f64 / dm.max(1.0);
        // A query that failed on either side leaves the totals incomparable.
        let missing: Vec<String> = self
            .queries
            .iter()
            .filter(|&&n| self.df_ms(n).is_none() || self.strata_ms(n).is_none())
            .map(|n| format!("q{n}"))
            .collect();
        let time_note = if missing.is_empty() {
            String::new()
        } else {
            format!(
                "; not comparable: {} failed, the totals leave it out",
                missing.join(", ")
            )
        };
        vec![
            (
                missing.is_empty() && time_ratio <= TIME_FLOOR,
                format!(
                    "time:   Strata {:.2} s vs DataFusion {:.2} s = {time_ratio:.2}x (floor {TIME_FLOOR}x){time_note}",
                    s / 1000.0,
                    d / 1000.0
                ),
            ),
            (
                mem_ratio <= MEMORY_FLOOR,
                format!(
                    "memory: Strata cluster {} (its processes' peaks, the binary's shared pages counted once) vs DataFusion {} = {mem_ratio:.2}x (floor {MEMORY_FLOOR}x); summing whole peaks: {} = {summed:.2}x",
                    mib_bytes(cm as u64),
                    mib_bytes(dm as u64),
                    mib_bytes(self.cluster_peak()),
                ),
            ),
        ]
    }

    pub(super) fn json(&self, errors: &[String], mismatches: &[String]) -> serde_json::Value {
        let (d, s) = self.totals();
        let queries: Vec<serde_json::Value> = self
            .queries
            .iter()
            .map(|&n| {
                let c = self.cluster.iter().find(|q| q.run.query == n);
                serde_json::json!({
                    "query": n,
                    "datafusion": self.df.queries.iter().find(|q| q.query == n),
                    "strata": c.map(|c| &c.run),
                    "strata_job_ms": c.map(|c| c.job_ms),
                    "strata_stages": c.map(|c| c.stages.iter().map(|s| serde_json::json!({
                        "stage": s.stage.get(),
                        "tasks": s.tasks,
                        "rows": s.rows,
                        "bytes": s.bytes,
                        "ms": s.elapsed.as_secs_f64() * 1000.0,
                        "failed": s.failed,
                        "recomputed": s.recomputed,
                        "speculative": s.speculative,
                    })).collect::<Vec<_>>()),
                    "ratio": match (self.df_ms(n), self.strata_ms(n)) {
                        (Some(d), Some(s)) if d > 0.0 => Some(s / d),
                        _ => None,
                    },
                    "results_match": self.matched.get(&n),
                })
            })
            .collect();
        let checks: Vec<serde_json::Value> = self
            .checks()
            .into_iter()
            .map(|(ok, line)| serde_json::json!({ "pass": ok, "what": line }))
            .collect();
        serde_json::json!({
            "sf": self.a.sf,
            "partitions": self.a.partitions,
            "runs": self.a.runs,
            "timing": "best of `runs` timed runs after one warm-up run, ms, SQL text to last row",
            "executor_mem_mib": self.a.executor_mem,
            "queries": queries,
            "total_ms": { "datafusion": d, "strata": s, "ratio": if d > 0.0 { Some(s / d) } else { None } },
            "memory": {
                "strata_processes": self.peaks,
                "strata_sum_bytes": self.cluster_peak(),
                "strata_sampled_summed_rss_bytes": self.sampled_total,
                "strata_shared_file_pages_once_bytes": self.cluster_peak_shared_once(),
                "strata_file_pages_union_bytes": self.file_union,
                "driver_pid": self.driver_pid,
                "datafusion_pid": self.df.pid,
                "datafusion_bytes": self.df.peak_rss_bytes,
                "datafusion_rss_anon_at_end_bytes": self.df.rss_anon_bytes,
                "datafusion_rss_file_at_end_bytes": self.df.rss_file_bytes,
            },
            "checks": checks,
            "errors": errors,
            "mismatches": mismatches,
            "other_processes_cpu_s": self.others_cpu_s,
        })
    }
}

fn mib(v: f64) -> String {
    if v >= 1024.0 && v % 1024.0 == 0.0 {
        format!("{} GiB", v / 1024.0)
    } else {
        format!("{v} MiB")
    }
}

pub(super) fn mib_bytes(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}
