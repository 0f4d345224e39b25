//! A query's rows on their way to the client: collected in the gateway
//! (queries answered here) or streamed from the cluster, partition by
//! partition, as the driver fetches the final stage's outputs
//! ([`strata_framework::driver::JobStream`]).
//!
//! A streamed query stays a running query until its last row is sent: it
//! is listed, a cancel stops it, and `statement_timeout` counts to the
//! end of the stream. A client gone before the end drops the stream,
//! which cancels the job.

use std::fmt;
use std::pin::Pin;
use std::time::Instant;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use futures::{Stream, StreamExt};
use strata_framework::driver::{CancelOnDrop, JobStream};
use strata_framework::session::SessionError;

use crate::error::GatewayError;
use crate::registry::QueryGuard;

/// Rows as they come.
pub struct RowStream(Pin<Box<dyn Stream<Item = Result<RecordBatch, GatewayError>> + Send>>);

impl fmt::Debug for RowStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RowStream")
    }
}

impl Stream for RowStream {
    type Item = Result<RecordBatch, GatewayError>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.as_mut().poll_next(cx)
    }
}

impl RowStream {
    /// Rows already at hand.
    pub fn ready(batches: Vec<RecordBatch>) -> RowStream {
        RowStream(Box::pin(futures::stream::iter(batches.into_iter().map(Ok))))
    }

    /// A job's rows, renamed to `schema`'s columns (the names clients are
    /// shown). The job is cancelled if the stream is dropped before its
    /// end; its figures are logged at the end.
    pub fn from_job(
        job: JobStream,
        schema: SchemaRef,
        cancel: CancelOnDrop,
        session: u64,
    ) -> RowStream {
        let state = (job, Some(cancel));
        let rows = futures::stream::unfold(state, move |(mut job, mut cancel)| {
            let schema = schema.clone();
            async move {
                cancel.as_ref()?;
                match job.next().await {
                    Some(Ok(batch)) => {
                        let renamed = RecordBatch::try_new(schema, batch.columns().to_vec())
                            .map_err(|e| GatewayError::from(DataFusionError::from(e)));
                        Some((renamed, (job, cancel)))
                    }
                    Some(Err(e)) => {
                        // The job ended: nothing to cancel.
                        if let Some(c) = cancel.take() {
                            c.disarm();
                        }
                        Some((
                            Err(GatewayError::Session(SessionError::Job(e))),
                            (job, None),
                        ))
                    }
                    None => {
                        if let Some(c) = cancel.take() {
                            c.disarm();
                        }
                        if let Some(out) = job.output() {
                            tracing::info!(
                                session,
                                job = %out.job,
                                tasks = out.stages.iter().map(|s| s.launched).sum::<u32>(),
                                ms = out.elapsed.as_millis() as u64,
                                "query ran on the cluster"
                            );
                        }
                        None
                    }
                }
            }
        });
        RowStream(Box::pin(rows))
    }

    /// These rows as a running query's: listed until they end, ended by a
    /// cancel through the registry, and by `deadline` (the statement's
    /// timeout). The stream ends after its first error.
    pub fn guarded(self, query: QueryGuard, deadline: Option<Instant>) -> RowStream {
        let state = (self, Some(query));
        let rows = futures::stream::unfold(state, move |(mut rows, query)| async move {
            let guard = query?;
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d.into(), rows.next())
                        .await
                        .unwrap_or(Some(Err(GatewayError::Timeout))),
                    None => rows.next().await,
                }
            };
            let next = tokio::select! {
                next = next => next,
                () = guard.cancelled() => Some(Err(GatewayError::Cancelled)),
            };
            match next {
                Some(Ok(batch)) => Some((Ok(batch), (rows, Some(guard)))),
                Some(Err(e)) => Some((Err(e), (rows, None))),
                None => None,
            }
        });
        RowStream(Box::pin(rows))
    }

    /// Waits for the first rows (for a job: until its final stage has
    /// run and its first partition is fetched), so that a query that fails
    /// fails before any row is sent, and the wait is the statement's (a
    /// protocol's cancel of the statement stops it); the rows after stream.
    pub async fn started(mut self) -> Result<RowStream, GatewayError> {
        match self.next().await {
            Some(Ok(first)) => Ok(RowStream(Box::pin(
                futures::stream::iter([Ok(first)]).chain(self.0),
            ))),
            Some(Err(e)) => Err(e),
            None => Ok(RowStream::ready(Vec::new())),
        }
    }

    /// These rows, then `more`'s.
    pub fn chain(self, more: RowStream) -> RowStream {
        RowStream(Box::pin(self.0.chain(more.0)))
    }

    /// Every row, collected (for callers that need them all at once).
    pub async fn collect(self) -> Result<Vec<RecordBatch>, GatewayError> {
        let mut rows = self;
        let mut batches = Vec::new();
        while let Some(batch) = rows.next().await {
            batches.push(batch?);
        }
        Ok(batches)
    }
}
