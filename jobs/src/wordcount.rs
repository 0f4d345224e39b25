//! Word count: how often each word occurs in text files.
//!
//! Words are the maximal runs of alphanumeric characters (Unicode), lower
//! cased; the result is sorted by count, descending, then by word. The
//! mapper ([`words`]) runs on the executors; the counts are summed by key
//! after a shuffle.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use strata_framework::mapreduce::{self, MapReduce, Reducer};
use strata_framework::session::Session;

use crate::{Job, JobFuture};

/// The name its mapper is registered under.
pub const MAPPER: &str = "wordcount";

/// The packaged job: `wordcount INPUT`.
pub const JOB: Job = Job {
    name: "wordcount",
    description: "counts the words of text files (a path, a directory or a glob)",
    usage: "INPUT",
    register,
    run: run_job,
};

/// The mapper: one `(word, 1)` per word of a line.
pub fn words(line: &str) -> Vec<(String, i64)> {
    line.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| (w.to_lowercase(), 1))
        .collect()
}

/// Registers the mapper; call it at process start, before the driver or an
/// executor starts.
pub fn register() {
    mapreduce::register_mapper(MAPPER, words);
}

/// Counts the words of the text files at `input` (a path, a directory or a
/// glob) on the session's cluster; sorted by count, descending, then word.
pub async fn run(session: &Session, input: &str) -> mapreduce::Result<Vec<(String, i64)>> {
    let mut counts = MapReduce::text(session, input)
        .await?
        .flat_map(MAPPER)?
        .reduce_by_key(Reducer::Sum)?
        .collect()
        .await?;
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(counts)
}

/// [`run`] as a [`Job`]: one argument, the input; one result set, `word`
/// and `count`.
fn run_job<'a>(session: &'a Session, args: &'a [String]) -> JobFuture<'a> {
    Box::pin(async move {
        let [input] = args else {
            return Err(format!("usage: wordcount {}", JOB.usage).into());
        };
        let counts = run(session, input).await?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("word", DataType::Utf8, false),
            Field::new("count", DataType::Int64, false),
        ]));
        let (words, counts): (Vec<String>, Vec<i64>) = counts.into_iter().unzip();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(words)),
                Arc::new(Int64Array::from(counts)),
            ],
        )?;
        Ok(vec![batch])
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    use strata_framework::driver::{Driver, DriverConfig, ExecutorSource};

    use super::*;

    const FILES: &[(&str, &str)] = &[
        (
            "one.txt",
            "The quick brown fox -- jumps over the lazy dog.\n\
             \"Quoted, with commas\", she said; THE END!\n\
             \n\
             It's a dog's life: dogs, DOGS, Dogs.\n",
        ),
        (
            "two.txt",
            "Numbers 42 and 42nd, and x2 = 2x?\r\n\
             \"\"\"triple quotes\"\"\" and 'single' quotes\r\n\
             comma,separated,values,the,end\r\n",
        ),
        (
            "three.md",
            "# Ünïcode Straße straße\n\
             tab\tseparated\twords | pipes | the\n\
             \"unterminated quote, the fox",
        ),
    ];

    /// The expected counts, computed without the engine.
    fn plain_word_count(texts: &[&str]) -> Vec<(String, i64)> {
        let mut counts: HashMap<String, i64> = HashMap::new();
        for text in texts {
            let mut word = String::new();
            for c in text.chars().chain(std::iter::once(' ')) {
                if c.is_alphanumeric() {
                    word.extend(c.to_lowercase());
                } else if !word.is_empty() {
                    *counts.entry(std::mem::take(&mut word)).or_default() += 1;
                }
            }
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    async fn driver(dir: &std::path::Path, n: usize) -> Arc<Driver> {
        let mut config = DriverConfig::new(ExecutorSource::InProcess(dir.to_path_buf()));
        config.executors.min = n;
        config.executors.max = n;
        config.executors.mem_mib = 256.0;
        let d = Driver::start(config).await.unwrap();
        d.wait_for_executors(n, Duration::from_secs(20))
            .await
            .unwrap();
        Arc::new(d)
    }

    #[test]
    fn words_splits_on_non_alphanumerics_and_lower_cases() {
        let w: Vec<_> = words("\"Hello, WORLD\" -- it's x2!")
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(w, ["hello", "world", "it", "s", "x2"]);
        assert!(words(" ,.;\"' ").is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn word_count_on_two_executors_matches_a_plain_count() {
        // As a job binary's main does: register, then start the driver
        // (whose executors are in this process).
        crate::register_all();
        let data = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        for (name, text) in FILES {
            std::fs::write(data.path().join(name), text).unwrap();
        }
        let texts: Vec<&str> = FILES.iter().map(|f| f.1).collect();
        let expected = plain_word_count(&texts);
        assert!(
            expected.iter().any(|(w, n)| w == "the" && *n == 6),
            "{expected:?}"
        );

        let d = driver(work.path(), 2).await;
        let session = Session::new(d.clone(), 3).unwrap();
        let input = data.path().to_str().unwrap().to_string();
        let got = run(&session, &input).await.unwrap();
        assert_eq!(got, expected);

        // Through the registry, as `strata submit wordcount INPUT` will.
        let job = crate::find("wordcount").unwrap();
        let batches = (job.run)(&session, std::slice::from_ref(&input))
            .await
            .unwrap();
        let b = &batches[0];
        let via_registry: Vec<(String, i64)> = b
            .column(0)
            .as_string::<i32>()
            .iter()
            .zip(b.column(1).as_primitive::<Int64Type>().iter())
            .map(|(w, n)| (w.unwrap().to_string(), n.unwrap()))
            .collect();
        assert_eq!(via_registry, expected);
        let err = (job.run)(&session, &[]).await.unwrap_err().to_string();
        assert_eq!(err, "usage: wordcount INPUT");
        d.shutdown().await;
    }
}
