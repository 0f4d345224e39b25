//! A job's result rows as a stream: the final stage's partitions, in
//! order, as the driver fetches them from the executors that hold them.
//!
//! The driver sends each final partition's batches whole into a bounded
//! channel once every final task has ended, so a reader holds a few
//! partitions at a time, never the whole result, and a slow reader slows
//! the fetches. An executor lost while the rows stream is written off;
//! its partitions not yet delivered are run again and the stream goes on
//! from the first partition it had not delivered (a partition is never
//! delivered twice, nor in part). Dropping the stream before its end
//! cancels the job.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use datafusion::arrow::record_batch::RecordBatch;
use futures::Stream;
use tokio::sync::{mpsc, oneshot};

use super::dag::JobId;
use super::{DriverError, JobOutput};

/// Result batches buffered between the driver's fetches and a reader.
pub(crate) const RESULT_BUFFER: usize = 4;

/// A job's result rows, in partition order; ends with the job (an error
/// if it failed). [`JobStream::output`] then holds the job's figures.
pub struct JobStream {
    id: JobId,
    rows: mpsc::Receiver<RecordBatch>,
    result: Option<oneshot::Receiver<Result<JobOutput, DriverError>>>,
    output: Option<JobOutput>,
}

impl JobStream {
    pub(crate) fn new(
        id: JobId,
        rows: mpsc::Receiver<RecordBatch>,
        result: oneshot::Receiver<Result<JobOutput, DriverError>>,
    ) -> JobStream {
        JobStream {
            id,
            rows,
            result: Some(result),
            output: None,
        }
    }

    /// The job.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// The job's figures (stages, tasks, time; no batches), once the
    /// stream has ended without an error.
    pub fn output(&self) -> Option<&JobOutput> {
        self.output.as_ref()
    }

    /// The job's figures, taken, once the stream has ended.
    pub fn into_output(self) -> Option<JobOutput> {
        self.output
    }
}

impl Stream for JobStream {
    type Item = Result<RecordBatch, DriverError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Rows first: the channel closes after the last of them, when the
        // job has ended; then its end says whether it succeeded.
        match self.rows.poll_recv(cx) {
            Poll::Ready(Some(batch)) => return Poll::Ready(Some(Ok(batch))),
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {}
        }
        let Some(result) = self.result.as_mut() else {
            return Poll::Ready(None);
        };
        let ended = match Pin::new(result).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(ended) => ended,
        };
        self.result = None;
        match ended {
            Ok(Ok(output)) => {
                self.output = Some(output);
                Poll::Ready(None)
            }
            Ok(Err(e)) => Poll::Ready(Some(Err(e))),
            Err(_) => Poll::Ready(Some(Err(DriverError::Stopped))),
        }
    }
}
