//! Runs a [`JobPlan`] in this process: stages in dependency order, each
//! stage's tasks concurrently (up to a limit), every task's plan fragment
//! round-tripped through its serialised form exactly as it would travel to
//! an executor. The distributed driver schedules the same stages and tasks
//! on executors; this runner is its single-process counterpart and the
//! reference the tests hold it to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use futures::StreamExt;

use crate::planner::JobPlan;
use strata_executor::codec::{plan_from_bytes, plan_to_bytes};
use strata_executor::ids::{PartitionId, StageId};
use strata_executor::shuffle::ShuffleWriterExec;

/// What one stage did.
#[derive(Clone, Debug, Default)]
pub struct StageMetrics {
    /// The stage.
    pub stage: StageId,
    /// Tasks run.
    pub tasks: usize,
    /// Rows written (map stages) or returned (final stage).
    pub rows: u64,
    /// Shuffle bytes written.
    pub bytes: u64,
    /// Wall time of the stage.
    pub elapsed: Duration,
}

/// The result of a job.
#[derive(Debug)]
pub struct JobResult {
    /// The rows of the final stage, partition by partition.
    pub batches: Vec<RecordBatch>,
    /// Per-stage figures.
    pub stages: Vec<StageMetrics>,
}

/// Runs every stage of `job`, at most `parallelism` tasks at a time.
pub async fn run_job(
    job: &JobPlan,
    ctx: Arc<TaskContext>,
    parallelism: usize,
) -> Result<JobResult> {
    let parallelism = parallelism.max(1);
    let mut metrics = Vec::new();
    let last = job.stages.len() - 1;
    let mut batches = Vec::new();
    for (i, stage) in job.stages.iter().enumerate() {
        let started = Instant::now();
        let bytes = plan_to_bytes(stage.plan.clone())?;
        let mut m = StageMetrics {
            stage: stage.id,
            tasks: stage.tasks,
            ..Default::default()
        };
        let partitions = PartitionId::all(stage.tasks as u32);
        let tasks = futures::stream::iter(partitions).map(|partition| {
            let bytes = bytes.clone();
            let ctx = ctx.clone();
            let is_final = i == last;
            async move {
                let plan = plan_from_bytes(&bytes, &ctx)?;
                if is_final {
                    let mut out = Vec::new();
                    let mut s = plan.execute(partition.index(), ctx)?;
                    while let Some(b) = s.next().await {
                        out.push(b?);
                    }
                    let rows = out.iter().map(|b| b.num_rows() as u64).sum();
                    Ok::<_, DataFusionError>((partition, out, rows, 0u64))
                } else {
                    let writer = plan.downcast_ref::<ShuffleWriterExec>().ok_or_else(|| {
                        DataFusionError::Internal("a map stage must end in a shuffle writer".into())
                    })?;
                    let w = writer.write(partition, ctx).await?;
                    Ok((partition, Vec::new(), w.rows, w.bytes))
                }
            }
        });
        let mut results: Vec<(PartitionId, Vec<RecordBatch>, u64, u64)> = tasks
            .buffer_unordered(parallelism)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        results.sort_by_key(|r| r.0);
        for (_, out, rows, b) in results {
            m.rows += rows;
            m.bytes += b;
            batches.extend(out);
        }
        m.elapsed = started.elapsed();
        metrics.push(m);
    }
    Ok(JobResult {
        batches,
        stages: metrics,
    })
}
