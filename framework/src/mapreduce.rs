//! A small typed MapReduce API for jobs that are not SQL, over the
//! session's DataFrames.
//!
//! ```no_run
//! # use strata_framework::mapreduce::{self, MapReduce, Reducer};
//! # use strata_framework::session::Session;
//! # async fn job(session: &Session) -> mapreduce::Result<()> {
//! // In main, before the driver or any executor starts:
//! mapreduce::register_mapper("words", |line| {
//!     line.split_whitespace().map(|w| (w.to_string(), 1)).collect()
//! });
//! // Later, with a session on a running driver:
//! let counts: Vec<(String, i64)> = MapReduce::text(session, "/data/books/*.txt")
//!     .await?
//!     .flat_map("words")?
//!     .reduce_by_key(Reducer::Sum)?
//!     .collect()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! * [`MapReduce::text`] reads text files (a path, a directory or a glob)
//!   as a dataset of [`Lines`]: DataFusion's CSV reader with a single
//!   `line` column, the unit separator (`\x1f`) as delimiter and the record
//!   separator (`\x1e`) as quote, so commas and quotes in a line come
//!   through intact. Lines end at `\n` or `\r\n`; empty lines are
//!   skipped; a line containing `\x1f` fails the job (and one starting
//!   with `\x1e` is misread); the files must be UTF-8 and uncompressed.
//! * [`Lines::flat_map`] applies a *mapper* to every line: a Rust function
//!   `Fn(&str) -> Vec<(String, i64)>`, turned into a scalar UDF that returns
//!   a `List<Struct<key: Utf8, value: Int64>>`, then unnested into
//!   [`Pairs`].
//! * [`Pairs::reduce_by_key`] is a DataFusion aggregate ([`Reducer`]);
//!   the hash repartition before it is the shuffle.
//! * [`Pairs::collect`] runs the job on the cluster ([`Session::collect`]).
//!
//! ## How a mapper reaches the executors
//!
//! The plan travels to the executors serialised with datafusion-proto, and
//! the mapper's UDF travels in it **by name** (`mapper:NAME`); each executor
//! resolves the name in its own function registry
//! ([`strata_executor::functions`]). A Rust job is one binary that is both
//! its driver and its executors, so the same registration runs on both
//! sides, and the rule is:
//!
//! > Register every mapper with [`register_mapper`] before starting the
//! > driver or the executor: a Rust job binary calls its registration
//! > function first thing in `main`, before either.
//!
//! An executor takes the registered functions when it connects to its
//! driver; a mapper registered later is unknown to it and its tasks fail
//! with DataFusion's "no UDF named `mapper:NAME`".

use std::fmt;
use std::hash::{Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayBuilder, ArrayRef, Int64Builder, ListArray, RecordBatch, StringBuilder, StructArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::common::cast::{as_int64_array, as_string_array};
use datafusion::common::{DataFusionError, UnnestOptions};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::{CsvReadOptions, DataFrame, SessionContext, col};
use strata_executor::functions;

use crate::session::{Session, SessionError};

/// A mapper: turns one line into key/value pairs.
pub type Mapper = Arc<dyn Fn(&str) -> Vec<(String, i64)> + Send + Sync>;

/// Why a MapReduce job failed.
#[derive(Debug, thiserror::Error)]
pub enum MapReduceError {
    /// [`Lines::flat_map`] named a mapper this process has not registered.
    #[error(
        "no mapper named '{name}' is registered in this process (registered: {}); \
         register every mapper with mapreduce::register_mapper in main, before \
         starting the driver or an executor",
        if registered.is_empty() { "none".to_string() } else { registered.join(", ") }
    )]
    UnknownMapper {
        /// The name asked for.
        name: String,
        /// The names registered.
        registered: Vec<String>,
    },
    /// DataFusion failed: planning (a missing input, a bad path…) or
    /// reading the results.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// The job failed on the cluster.
    #[error(transparent)]
    Job(#[from] SessionError),
}

impl From<ArrowError> for MapReduceError {
    fn from(e: ArrowError) -> Self {
        MapReduceError::DataFusion(e.into())
    }
}

/// The result of a MapReduce step.
pub type Result<T, E = MapReduceError> = std::result::Result<T, E>;

/// The name a mapper's UDF goes by in plans and function registries.
const UDF_PREFIX: &str = "mapper:";

fn udf_name(mapper: &str) -> String {
    format!("{UDF_PREFIX}{mapper}")
}

/// Registers a mapper under `name` for this process (its driver and its
/// executors), replacing one registered before under that name. Call it
/// before starting the driver or an executor (see the module docs).
///
/// The mapper runs on the executors, once per non-empty line, possibly on
/// several threads at once, and possibly more than once per line if a task
/// is retried or speculatively copied: keep it pure. A panic in it fails
/// the task (and, once retries are spent, the job) with its message.
pub fn register_mapper<F>(name: &str, mapper: F)
where
    F: Fn(&str) -> Vec<(String, i64)> + Send + Sync + 'static,
{
    functions::register_scalar_udf(ScalarUDF::new_from_impl(MapperUdf {
        name: udf_name(name),
        mapper: Arc::new(mapper),
        signature: Signature::string(1, Volatility::Volatile),
    }));
}

/// The names of the registered mappers, sorted.
pub fn mappers() -> Vec<String> {
    functions::scalar_udfs()
        .iter()
        .filter_map(|u| u.name().strip_prefix(UDF_PREFIX).map(str::to_string))
        .collect()
}

fn pair_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Int64, false),
    ])
}

fn pair_item() -> FieldRef {
    Arc::new(Field::new_list_field(
        DataType::Struct(pair_fields()),
        false,
    ))
}

/// A mapper as a scalar UDF: `Utf8 -> List<Struct<key: Utf8, value: Int64>>`.
/// Volatile, so that DataFusion never evaluates it while planning (in the
/// driver).
struct MapperUdf {
    name: String,
    mapper: Mapper,
    signature: Signature,
}

impl fmt::Debug for MapperUdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapperUdf")
            .field("name", &self.name)
            .finish()
    }
}

impl PartialEq for MapperUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.mapper, &other.mapper)
    }
}

impl Eq for MapperUdf {}

impl Hash for MapperUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for MapperUdf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::List(pair_item()))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return Err(DataFusionError::Internal(format!(
                "{} takes one argument",
                self.name
            )));
        };
        let lines = cast(&arg.to_array(args.number_rows)?, &DataType::Utf8)?;
        let lines = as_string_array(&lines)?;
        let mut keys = StringBuilder::new();
        let mut values = Int64Builder::new();
        let mut offsets = Vec::with_capacity(lines.len() + 1);
        offsets.push(0i32);
        for line in lines.iter() {
            if let Some(line) = line {
                let pairs =
                    catch_unwind(AssertUnwindSafe(|| (self.mapper)(line))).map_err(|p| {
                        let msg = p
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "(no message)".into());
                        DataFusionError::Execution(format!("{} panicked: {msg}", self.name))
                    })?;
                for (k, v) in pairs {
                    keys.append_value(k);
                    values.append_value(v);
                }
            }
            let end = i32::try_from(values.len()).map_err(|_| {
                DataFusionError::Execution(format!(
                    "{}: more than 2^31 pairs in one batch",
                    self.name
                ))
            })?;
            offsets.push(end);
        }
        let pairs = StructArray::try_new(
            pair_fields(),
            vec![
                Arc::new(keys.finish()) as ArrayRef,
                Arc::new(values.finish()) as ArrayRef,
            ],
            None,
        )?;
        let list = ListArray::try_new(
            pair_item(),
            OffsetBuffer::new(offsets.into()),
            Arc::new(pairs),
            None,
        )?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}

/// Reads text files as a DataFrame with one non-null `Utf8` column, `line`
/// (see the module docs for what a line is). `path` is a file, a directory
/// (every file in it) or a glob, local or `s3://`.
pub async fn read_text(ctx: &SessionContext, path: &str) -> Result<DataFrame> {
    let schema = Schema::new(vec![Field::new("line", DataType::Utf8, true)]);
    let options = CsvReadOptions::new()
        .has_header(false)
        .delimiter(0x1f)
        .quote(0x1e)
        .file_extension("")
        .schema(&schema);
    let df = ctx.read_csv(path, options).await?;
    // Empty lines read as nulls.
    Ok(df.filter(col("line").is_not_null())?)
}

/// Entry point of the MapReduce API.
pub struct MapReduce;

impl MapReduce {
    /// The lines of text files on `session` ([`read_text`]).
    pub async fn text<'a>(session: &'a Session, path: &str) -> Result<Lines<'a>> {
        let df = read_text(session.context(), path).await?;
        Ok(Lines { session, df })
    }
}

/// A dataset of lines.
pub struct Lines<'a> {
    session: &'a Session,
    df: DataFrame,
}

impl<'a> Lines<'a> {
    /// Applies the registered mapper `mapper` to every line; its pairs,
    /// all together, are the result.
    pub fn flat_map(self, mapper: &str) -> Result<Pairs<'a>> {
        let udf = functions::scalar_udf(&udf_name(mapper)).ok_or_else(|| {
            MapReduceError::UnknownMapper {
                name: mapper.to_string(),
                registered: mappers(),
            }
        })?;
        let df = self
            .df
            .select(vec![udf.call(vec![col("line")]).alias("pair")])?
            .unnest_columns_with_options(
                &["pair"],
                UnnestOptions::new().with_preserve_nulls(false),
            )?
            .select(vec![
                get_field(col("pair"), "key").alias("key"),
                get_field(col("pair"), "value").alias("value"),
            ])?;
        Ok(Pairs {
            session: self.session,
            df,
        })
    }

    /// The DataFrame (one column, `line`).
    pub fn dataframe(&self) -> &DataFrame {
        &self.df
    }

    /// Runs on the cluster and returns the lines, in no particular order.
    pub async fn collect(self) -> Result<Vec<String>> {
        let out = self.session.collect(self.df).await?;
        let mut lines = Vec::new();
        for b in &out.batches {
            let col = cast(b.column(0), &DataType::Utf8)?;
            lines.extend(as_string_array(&col)?.iter().flatten().map(str::to_string));
        }
        Ok(lines)
    }
}

/// How [`Pairs::reduce_by_key`] combines the values of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reducer {
    /// Their sum.
    Sum,
    /// The smallest.
    Min,
    /// The largest.
    Max,
    /// How many pairs.
    Count,
}

impl Reducer {
    fn aggregate(self, value: Expr) -> Expr {
        match self {
            Reducer::Sum => sum(value),
            Reducer::Min => min(value),
            Reducer::Max => max(value),
            Reducer::Count => count(value),
        }
    }
}

/// A dataset of key/value pairs (columns `key: Utf8`, `value: Int64`).
pub struct Pairs<'a> {
    session: &'a Session,
    df: DataFrame,
}

impl<'a> Pairs<'a> {
    /// One pair per key, its values combined by `reducer`.
    pub fn reduce_by_key(self, reducer: Reducer) -> Result<Pairs<'a>> {
        let df = self.df.aggregate(
            vec![col("key")],
            vec![reducer.aggregate(col("value")).alias("value")],
        )?;
        Ok(Pairs {
            session: self.session,
            df,
        })
    }

    /// The DataFrame (columns `key`, `value`).
    pub fn dataframe(&self) -> &DataFrame {
        &self.df
    }

    /// Runs on the cluster and returns the pairs, in no particular order.
    pub async fn collect(self) -> Result<Vec<(String, i64)>> {
        let out = self.session.collect(self.df).await?;
        let mut pairs = Vec::new();
        for b in &out.batches {
            pairs.extend(pairs_of(b)?);
        }
        Ok(pairs)
    }
}

fn pairs_of(b: &RecordBatch) -> Result<Vec<(String, i64)>> {
    let keys = cast(b.column(0), &DataType::Utf8)?;
    let values = cast(b.column(1), &DataType::Int64)?;
    let keys = as_string_array(&keys)?;
    let values = as_int64_array(&values)?;
    (0..b.num_rows())
        .map(|i| {
            if keys.is_null(i) || values.is_null(i) {
                return Err(DataFusionError::Execution("a null key or value".into()).into());
            }
            Ok((keys.value(i).to_string(), values.value(i)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! On an in-process driver with in-process executors (real gRPC links,
    //! real Flight shuffle).

    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Once;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::driver::{Driver, DriverConfig, ExecutorSource};

    /// Calls of the `test_counted` mapper (used by one test only).
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    /// Registers the tests' mappers, before any driver or executor starts.
    fn register() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            register_mapper("test_counted", |line| {
                CALLS.fetch_add(1, Ordering::SeqCst);
                vec![(line.to_string(), 1)]
            });
            register_mapper("test_identity", |line| vec![(line.to_string(), 1)]);
            register_mapper("test_first_char_len", |line| {
                let first = line.chars().next().unwrap_or(' ').to_string();
                vec![(first, line.chars().count() as i64)]
            });
        });
    }

    async fn driver(dir: &Path, n: usize) -> Arc<Driver> {
        register();
        let mut config = DriverConfig::new(ExecutorSource::InProcess(dir.to_path_buf()));
        config.executors.min = n;
        config.executors.max = n;
        config.executors.mem_mib = 256.0;
        // Every attempt is counted: no speculative copies.
        config.policy.speculation = None;
        let d = Driver::start(config).await.unwrap();
        d.wait_for_executors(n, Duration::from_secs(20))
            .await
            .unwrap();
        Arc::new(d)
    }

    fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
        v.sort();
        v
    }

    const AWKWARD: &[(&str, &str)] = &[
        (
            "a.txt",
            "plain line\nwith, commas, here\n\"fully quoted\"\nsay \"hi\", then 'bye'\n\
             \"unterminated quote\n\"\n\"\"\n\n  leading and trailing spaces  \n\
             #not a comment\ttab\n",
        ),
        ("b.txt", "crlf one\r\ncrlf, \"two\"\r\n\r\n"),
        (
            "c.log",
            "unicode é ü 日本\nback\\slash; semi|pipe\n,,,\nno trailing newline",
        ),
    ];

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn text_lines_come_through_intact_and_reducers_match() {
        let data = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let mut expected = Vec::new();
        for (name, text) in AWKWARD {
            std::fs::write(data.path().join(name), text).unwrap();
            expected.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
        }
        let d = driver(work.path(), 2).await;
        let session = Session::new(d.clone(), 3).unwrap();
        let dir = data.path().to_str().unwrap();

        let lines = MapReduce::text(&session, dir).await.unwrap();
        let got = lines.collect().await.unwrap();
        assert_eq!(sorted(got), sorted(expected.clone()));

        // A glob.
        let glob = format!("{dir}/*.txt");
        let got = MapReduce::text(&session, &glob)
            .await
            .unwrap()
            .flat_map("test_identity")
            .unwrap()
            .collect()
            .await
            .unwrap();
        let a_and_b: Vec<_> = AWKWARD[..2]
            .iter()
            .flat_map(|(_, t)| t.lines().filter(|l| !l.is_empty()))
            .map(|l| (l.to_string(), 1))
            .collect();
        assert_eq!(sorted(got), sorted(a_and_b));

        // Every reducer against a plain Rust reduction.
        let mut by_first: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for l in &expected {
            let first = l.chars().next().unwrap().to_string();
            by_first
                .entry(first)
                .or_default()
                .push(l.chars().count() as i64);
        }
        for (reducer, f) in [
            (
                Reducer::Sum,
                (|v: &Vec<i64>| v.iter().sum()) as fn(&Vec<i64>) -> i64,
            ),
            (Reducer::Min, |v| *v.iter().min().unwrap()),
            (Reducer::Max, |v| *v.iter().max().unwrap()),
            (Reducer::Count, |v| v.len() as i64),
        ] {
            let got = MapReduce::text(&session, dir)
                .await
                .unwrap()
                .flat_map("test_first_char_len")
                .unwrap()
                .reduce_by_key(reducer)
                .unwrap()
                .collect()
                .await
                .unwrap();
            let want: Vec<(String, i64)> =
                by_first.iter().map(|(k, v)| (k.clone(), f(v))).collect();
            assert_eq!(sorted(got), want, "{reducer:?}");
        }
        d.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_mapper_runs_on_the_executors_once_per_line() {
        let data = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let mut lines = Vec::new();
        for f in 0..3 {
            let text: Vec<String> = (0..200).map(|i| format!("file {f}, line {i}")).collect();
            std::fs::write(data.path().join(format!("{f}.txt")), text.join("\n")).unwrap();
            lines.extend(text);
        }
        let d = driver(work.path(), 2).await;
        let session = Session::new(d.clone(), 4).unwrap();
        let pairs = MapReduce::text(&session, data.path().to_str().unwrap())
            .await
            .unwrap()
            .flat_map("test_counted")
            .unwrap()
            .reduce_by_key(Reducer::Sum)
            .unwrap();

        // Planning in the driver calls nothing; the plan carries the
        // mapper by name, and a context without the job functions (an
        // executor that did not register it) cannot decode it.
        let physical = pairs
            .dataframe()
            .clone()
            .create_physical_plan()
            .await
            .unwrap();
        let job = crate::planner::plan_stages("mr", physical.clone(), Path::new("")).unwrap();
        assert!(job.stages.len() >= 2, "a map stage and a reduce stage");
        let bytes = crate::codec::plan_to_bytes(physical).unwrap();
        let name = b"mapper:test_counted";
        assert!(bytes.windows(name.len()).any(|w| w == name));
        let bare = SessionContext::new().task_ctx();
        let err = crate::codec::plan_from_bytes(&bytes, &bare)
            .unwrap_err()
            .to_string();
        assert!(err.contains("mapper:test_counted"), "{err}");
        assert_eq!(CALLS.load(Ordering::SeqCst), 0);

        let got = pairs.collect().await.unwrap();
        assert_eq!(CALLS.load(Ordering::SeqCst), lines.len());
        let want: Vec<_> = lines.into_iter().map(|l| (l, 1)).collect();
        assert_eq!(sorted(got), sorted(want));
        d.shutdown().await;
    }

    #[tokio::test]
    async fn a_line_with_a_unit_separator_is_an_error() {
        let data = tempfile::tempdir().unwrap();
        let path = data.path().join("x.txt");
        std::fs::write(&path, "fine\nnot\x1ffine\n").unwrap();
        let df = read_text(&SessionContext::new(), path.to_str().unwrap())
            .await
            .unwrap();
        let err = df.collect().await.unwrap_err().to_string();
        assert!(err.contains("fields"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_mapper_is_a_clear_error() {
        let data = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join("x.txt"), "a line\n").unwrap();
        let d = driver(work.path(), 1).await;
        let session = Session::new(d.clone(), 2).unwrap();
        let lines = MapReduce::text(&session, data.path().to_str().unwrap())
            .await
            .unwrap();
        let err = match lines.flat_map("no_such_mapper") {
            Err(e) => e,
            Ok(_) => panic!("an unknown mapper was accepted"),
        };
        assert!(
            matches!(err, MapReduceError::UnknownMapper { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("'no_such_mapper'")
                && msg.contains("test_counted")
                && msg.contains("before starting the driver"),
            "{msg}"
        );
        d.shutdown().await;
    }
}
