//! `strata-letters`: a job binary, built the way a user builds one.
//!
//! It counts the letters of text files with a mapper that only this binary
//! knows (`strata` itself has no `letters` mapper), so its executors must
//! be this binary too: `strata submit ./strata-letters INPUT` fetches it
//! into the driver's sandbox and into every executor's.
//!
//! ```sh
//! strata-letters books/                    # runs here, with in-process executors
//! strata submit --wait ./strata-letters books/   # runs on the cluster
//! ```

use std::process::ExitCode;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use strata_framework::job::{self, Job, JobFuture};
use strata_framework::mapreduce::{self, MapReduce, Reducer};
use strata_framework::session::Session;

/// The mapper: one `(letter, 1)` per alphabetic character, lower cased.
fn letters(line: &str) -> Vec<(String, i64)> {
    line.chars()
        .filter(|c| c.is_alphabetic())
        .flat_map(char::to_lowercase)
        .map(|c| (c.to_string(), 1))
        .collect()
}

fn register() {
    mapreduce::register_mapper("letters", letters);
}

fn run<'a>(session: &'a Session, args: &'a [String]) -> JobFuture<'a> {
    Box::pin(async move {
        let [input] = args else {
            return Err(format!("usage: strata-letters {}", JOB.usage).into());
        };
        let mut counts = MapReduce::text(session, input)
            .await?
            .flat_map("letters")?
            .reduce_by_key(Reducer::Sum)?
            .collect()
            .await?;
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let schema = Arc::new(Schema::new(vec![
            Field::new("letter", DataType::Utf8, false),
            Field::new("count", DataType::Int64, false),
        ]));
        let (letters, counts): (Vec<String>, Vec<i64>) = counts.into_iter().unzip();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(letters)),
                Arc::new(Int64Array::from(counts)),
            ],
        )?;
        Ok(vec![batch])
    })
}

static JOB: Job = Job {
    name: "letters",
    description: "counts the letters of text files (a path, a directory or a glob)",
    usage: "INPUT",
    register,
    run,
};

fn main() -> ExitCode {
    job::main(&JOB)
}
