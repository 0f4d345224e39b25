//! `COPY (query) TO 'dir/'` as a distributed write that lands at once.
//!
//! A `COPY` into a directory (a target ending in `/`, without a file
//! extension, or with `PARTITIONED BY`) plans like an `INSERT` into a
//! Delta table ([`crate::write`]): `CommitExec(TableWriterExec(query))`.
//! The tasks write their files under a staging directory,
//! `dir/_strata_staging/{write}/`, which readers skip (DataFusion lists no
//! file in a subdirectory whose name holds no `=`; Spark and Hive skip
//! names starting with `_`). The commit moves the files of one attempt per
//! partition into place — `dir/part-…` or `dir/col=value/part-…` — and
//! writes `dir/_SUCCESS` naming them (the marker Hadoop's committers write
//! and Spark checks; like S3A's committer, it is a JSON manifest). A write
//! that fails or is cancelled removes its staging directory; a move that
//! fails takes back the files already moved. A `COPY` to one file
//! (`'out.parquet'`) is written by DataFusion in the driver process.
//!
//! DuckDB's option list, `COPY (…) TO 'dir' (FORMAT parquet, PARTITION_BY
//! (col), COMPRESSION zstd)`, is read as DataFusion's `STORED AS …
//! PARTITIONED BY (…) OPTIONS (…)` ([`duckdb_options`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::{DataFusionError, Result, not_impl_err};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::dml::CopyTo;
use datafusion::physical_plan::ExecutionPlan;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use strata_executor::write::{FileFormat, TableWriterExec, WriteSpec};

use crate::write::{CommitExec, Committer, WrittenFile, delete_prefix, written_files};

/// The directory a write's tasks write into, under its target.
pub const STAGING_DIR: &str = "_strata_staging";

/// The marker a committed `COPY` leaves in its directory.
pub const SUCCESS_MARKER: &str = "_SUCCESS";

/// Whether a `COPY` writes a directory (a target ending in `/`, without
/// an extension, or partitioned), which [`plan`] makes a write that lands
/// at once; a `COPY` to one file DataFusion writes itself.
pub fn into_directory(copy: &CopyTo) -> bool {
    copy.output_url.ends_with('/')
        || !copy.partition_by.is_empty()
        || std::path::Path::new(&copy.output_url).extension().is_none()
}

/// Plans a `COPY` into a directory ([`into_directory`]) as a write whose
/// files land at once.
pub fn plan(
    copy: &CopyTo,
    input: Arc<dyn ExecutionPlan>,
    config: &ConfigOptions,
    runtime: &RuntimeEnv,
) -> Result<CommitExec> {
    let format = copy.file_type.get_ext();
    let spec = WriteSpec {
        format: file_format(format.trim_start_matches('.'), &copy.options, config)?,
        partition_by: copy.partition_by.clone(),
    };
    spec.validate(&input.schema())?;
    let url = ListingTableUrl::parse(&copy.output_url)?;
    let store = runtime.object_store(url.object_store())?;
    let mut target: url::Url = AsRef::<url::Url>::as_ref(&url).clone();
    if !target.path().ends_with('/') {
        target.set_path(&format!("{}/", target.path()));
    }
    let write = uuid::Uuid::new_v4().simple().to_string();
    let staging = target
        .join(&format!("{STAGING_DIR}/{write}/"))
        .map_err(|e| DataFusionError::Plan(format!("bad COPY target {target}: {e}")))?;
    let local = match target.scheme() {
        "file" => target.to_file_path().ok(),
        _ => None,
    };
    let committer = DirCommitter {
        store,
        target: url_path(&target)?,
        staging: url_path(&staging)?,
        local,
        write: write.clone(),
    };
    let writer = TableWriterExec::with_spec(input, staging, format!("part-{}", &write[..8]), spec);
    Ok(CommitExec::new(Arc::new(writer), Arc::new(committer)))
}

fn url_path(url: &url::Url) -> Result<Path> {
    Path::from_url_path(url.path()).map_err(|e| DataFusionError::External(Box::new(e)))
}

/// The files' format from `STORED AS` and the `OPTIONS` this write
/// honours; any other option is refused rather than ignored.
fn file_format(
    ext: &str,
    options: &HashMap<String, String>,
    config: &ConfigOptions,
) -> Result<FileFormat> {
    let mut options = options.clone();
    let compression = options.remove("format.compression");
    let format = match ext.to_ascii_lowercase().as_str() {
        "parquet" => FileFormat::Parquet {
            compression: compression
                .or_else(|| config.execution.parquet.compression.clone())
                .unwrap_or_else(|| "zstd(3)".into())
                .to_ascii_lowercase(),
            row_group_rows: match options.remove("format.max_row_group_size") {
                None => config.execution.parquet.max_row_group_size,
                Some(n) => n.parse().map_err(|_| {
                    DataFusionError::Plan(format!("max_row_group_size is a number, not {n:?}"))
                })?,
            },
        },
        ext @ ("csv" | "json") => {
            if let Some(c) = compression.filter(|c| !c.eq_ignore_ascii_case("uncompressed")) {
                return not_impl_err!("compression {c} of {ext} files written by COPY");
            }
            if ext == "json" {
                FileFormat::Json
            } else {
                csv_format(&mut options)?
            }
        }
        other => return not_impl_err!("COPY into a directory as {other} (parquet, csv, json)"),
    };
    if let Some(key) = options.keys().min() {
        return not_impl_err!(
            "COPY option {key} (a COPY into a directory takes compression and, for \
             Parquet, max_row_group_size; for CSV has_header and delimiter)"
        );
    }
    Ok(format)
}

fn csv_format(options: &mut HashMap<String, String>) -> Result<FileFormat> {
    let header = match options.remove("format.has_header").as_deref() {
        None => true,
        Some(v) => v.parse::<bool>().map_err(|_| {
            DataFusionError::Plan(format!("has_header is true or false, not {v:?}"))
        })?,
    };
    let delimiter = match options.remove("format.delimiter") {
        None => b',',
        Some(d) => match d.as_bytes() {
            [b] => *b,
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "a CSV delimiter is one character, not {d:?}"
                )));
            }
        },
    };
    Ok(FileFormat::Csv { header, delimiter })
}

/// A staging directory whose newest file is this old belongs to a write
/// whose driver died: a running write's tasks keep adding files, and a
/// write that ends removes its own. The next COPY into the directory
/// removes it.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// When a file under `dir` was last changed (the newest of them; `None`
/// if there are none).
fn newest_under(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                todo.push(e.path());
            } else if let Ok(at) = meta.modified() {
                newest = newest.max(Some(at));
            }
        }
    }
    newest
}

/// Commits a `COPY`'s staged files into its directory.
#[derive(Debug)]
struct DirCommitter {
    store: Arc<dyn ObjectStore>,
    target: Path,
    staging: Path,
    /// The staging directory on this machine's file system, whose empty
    /// directories stay behind when its files are deleted.
    local: Option<std::path::PathBuf>,
    write: String,
}

impl DirCommitter {
    fn under(dir: &Path, relative: &str) -> Path {
        relative
            .split('/')
            .fold(dir.clone(), |p, segment| p.join(segment))
    }

    /// Removes the staging directory and everything in it.
    async fn remove_staging(&self) -> Result<()> {
        delete_prefix(self.store.as_ref(), &self.staging)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        if let Some(local) = &self.local {
            let staging = local.join(STAGING_DIR);
            match std::fs::remove_dir_all(staging.join(&self.write)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            // Gone only if no other write is staging here.
            std::fs::remove_dir(staging).ok();
        }
        Ok(())
    }

    /// Removes the staging directories of other writes abandoned
    /// ([`ABANDONED_AFTER`]); how many. On this machine's file system the
    /// directories are read as they are (a killed writer's unfinished
    /// files are temporary files an object store listing does not show).
    async fn remove_abandoned(&self) -> Result<usize> {
        let now = std::time::SystemTime::now();
        let old = |at: std::time::SystemTime| {
            now.duration_since(at).unwrap_or_default() >= ABANDONED_AFTER
        };
        let mut removed = 0;
        if let Some(local) = &self.local {
            let Ok(writes) = std::fs::read_dir(local.join(STAGING_DIR)) else {
                return Ok(0);
            };
            for dir in writes.flatten() {
                let write = dir.file_name().to_string_lossy().into_owned();
                if write != self.write && newest_under(&dir.path()).is_some_and(old) {
                    std::fs::remove_dir_all(dir.path())?;
                    tracing::info!(write, "an abandoned copy's staged files removed");
                    removed += 1;
                }
            }
            return Ok(removed);
        }
        use futures::StreamExt;
        let root = Self::under(&self.target, STAGING_DIR);
        let mut newest: HashMap<String, std::time::SystemTime> = HashMap::new();
        let mut listing = self.store.list(Some(&root));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| DataFusionError::External(Box::new(e)))?;
            let Some(write) = meta
                .location
                .prefix_match(&root)
                .and_then(|mut parts| parts.next())
            else {
                continue;
            };
            let at = std::time::SystemTime::from(meta.last_modified);
            let entry = newest.entry(write.as_ref().to_owned()).or_insert(at);
            *entry = (*entry).max(at);
        }
        for (write, at) in newest {
            if write == self.write || !old(at) {
                continue;
            }
            delete_prefix(self.store.as_ref(), &root.clone().join(write.as_str()))
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            tracing::info!(write, "an abandoned copy's staged files removed");
            removed += 1;
        }
        Ok(removed)
    }

    /// Moves the chosen files into place; on a failure, takes back those
    /// already moved.
    async fn move_into_place(&self, files: &[WrittenFile]) -> Result<()> {
        let mut moved: Vec<Path> = Vec::with_capacity(files.len());
        for f in files {
            let to = Self::under(&self.target, &f.path);
            let from = Self::under(&self.staging, &f.path);
            if let Err(e) = self.store.rename(&from, &to).await {
                for m in &moved {
                    if let Err(undo) = self.store.delete(m).await {
                        tracing::warn!(file = %m, error = %undo, "a moved file of a failed copy stays");
                    }
                }
                return Err(DataFusionError::External(Box::new(e)));
            }
            moved.push(to);
        }
        Ok(())
    }
}

#[async_trait]
impl Committer for DirCommitter {
    async fn commit(&self, files: &[RecordBatch]) -> Result<u64> {
        let chosen = written_files(files)?;
        let rows = chosen.iter().map(|f| f.rows.max(0) as u64).sum();
        if let Err(e) = self.move_into_place(&chosen).await {
            self.remove_staging().await?;
            return Err(e);
        }
        let manifest = serde_json::json!({
            "write": self.write,
            "rows": rows,
            "files": chosen
                .iter()
                .map(|f| serde_json::json!({"path": f.path, "bytes": f.bytes, "rows": f.rows}))
                .collect::<Vec<_>>(),
        });
        let marker = Self::under(&self.target, SUCCESS_MARKER);
        self.store
            .put(&marker, PutPayload::from(manifest.to_string().into_bytes()))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        // What is left are the attempts not chosen.
        self.remove_staging().await?;
        if let Err(e) = self.remove_abandoned().await {
            tracing::warn!(error = %e, "abandoned staging directories stay");
        }
        Ok(rows)
    }

    async fn abort(&self) -> Result<()> {
        self.remove_staging().await
    }
}

/// DuckDB's `COPY … TO 'target' (FORMAT f, PARTITION_BY (cols), KEY
/// value, …)` becomes DataFusion's `COPY … TO 'target' STORED AS f
/// PARTITIONED BY (cols) OPTIONS ('format.key' 'value', …)` (`HEADER` is
/// `has_header`, `DELIMITER`/`DELIM`/`SEP` `delimiter`). SQL without such
/// a list is returned as it is.
pub fn duckdb_options(sql: &str) -> Cow<'_, str> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    if !sql.to_ascii_uppercase().contains("COPY") {
        return Cow::Borrowed(sql);
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Cow::Borrowed(sql);
    };
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i], Token::Whitespace(_)))
        .collect();
    let is = |i: usize, kw: &str| matches!(&tokens[i], Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw));
    // (first token replaced, last token replaced, replacement)
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut statement_start = true;
    let mut in_copy = false;
    let mut depth = 0usize;
    for (n, &i) in significant.iter().enumerate() {
        match &tokens[i] {
            Token::SemiColon if depth == 0 => {
                statement_start = true;
                in_copy = false;
                continue;
            }
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        if statement_start {
            in_copy = is(i, "COPY");
            statement_start = false;
        }
        let target = significant.get(n + 1).map(|&t| &tokens[t]);
        let open = significant.get(n + 2).copied();
        if in_copy
            && depth == 0
            && is(i, "TO")
            && matches!(target, Some(Token::SingleQuotedString(_)))
            && open.is_some_and(|o| tokens[o] == Token::LParen)
            && let Some((end, clauses)) = option_list(&tokens, &significant[n + 2..])
        {
            edits.push((significant[n + 2], end, clauses));
            in_copy = false;
        }
    }
    if edits.is_empty() {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 32);
    let mut i = 0;
    for (from, to, text) in edits {
        out.extend(tokens[i..from].iter().map(|t| t.to_string()));
        out.push_str(&text);
        i = to + 1;
    }
    out.extend(tokens[i..].iter().map(|t| t.to_string()));
    Cow::Owned(out)
}

/// Reads `(KEY [value | (list)], …)` starting at `at[0]` (the `(`): the
/// index of its `)` and DataFusion's clauses for it.
fn option_list(
    tokens: &[datafusion::sql::sqlparser::tokenizer::Token],
    at: &[usize],
) -> Option<(usize, String)> {
    use datafusion::sql::sqlparser::tokenizer::Token;
    let text = |t: &Token| match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.clone()),
        Token::Word(w) => Some(w.to_string()),
        Token::SingleQuotedString(s) => Some(s.clone()),
        Token::Number(n, _) => Some(n.clone()),
        _ => None,
    };
    let mut stored_as = None;
    let mut partition_by: Vec<String> = Vec::new();
    let mut options: Vec<(String, String)> = Vec::new();
    let mut k = 1;
    loop {
        let key = text(&tokens[*at.get(k)?])?.to_ascii_lowercase();
        k += 1;
        let mut values: Vec<String> = Vec::new();
        match &tokens[*at.get(k)?] {
            Token::Comma | Token::RParen => {}
            Token::LParen => {
                k += 1;
                loop {
                    values.push(match &tokens[*at.get(k)?] {
                        Token::Word(w) => w.to_string(),
                        t => text(t)?,
                    });
                    k += 1;
                    match &tokens[*at.get(k)?] {
                        Token::Comma => k += 1,
                        Token::RParen => break,
                        _ => return None,
                    }
                }
                k += 1;
            }
            t => {
                values.push(text(t)?);
                k += 1;
            }
        }
        match key.as_str() {
            "format" => stored_as = Some(values.first()?.clone()),
            "partition_by" => partition_by.extend(values),
            _ => {
                let key = match key.as_str() {
                    "header" => "has_header",
                    "delim" | "sep" => "delimiter",
                    k => k,
                };
                let value = values.first().cloned().unwrap_or_else(|| "true".into());
                let value = match value.as_str() {
                    "1" if key == "has_header" => "true".into(),
                    "0" if key == "has_header" => "false".into(),
                    _ => value,
                };
                options.push((key.to_owned(), value));
            }
        }
        match &tokens[*at.get(k)?] {
            Token::Comma => k += 1,
            Token::RParen => break,
            _ => return None,
        }
    }
    let mut clauses = String::new();
    if let Some(format) = stored_as {
        clauses.push_str(&format!("STORED AS {format}"));
    }
    if !partition_by.is_empty() {
        clauses.push_str(&format!(" PARTITIONED BY ({})", partition_by.join(", ")));
    }
    if !options.is_empty() {
        let quoted: Vec<String> = options
            .iter()
            .map(|(k, v)| format!("'format.{k}' '{}'", v.replace('\'', "''")))
            .collect();
        clauses.push_str(&format!(" OPTIONS ({})", quoted.join(", ")));
    }
    Some((at[k], clauses.trim_start().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duckdb_option_lists_become_datafusion_clauses() {
        assert_eq!(
            duckdb_options(
                "COPY (SELECT a, b FROM t) TO 'out/' (FORMAT parquet, PARTITION_BY (b, \"C\"), COMPRESSION zstd)"
            ),
            "COPY (SELECT a, b FROM t) TO 'out/' STORED AS parquet PARTITIONED BY (b, \"C\") \
             OPTIONS ('format.compression' 'zstd')"
        );
        assert_eq!(
            duckdb_options("copy t to 'x' (format csv, header, delimiter ';'); select 'to'"),
            "copy t to 'x' STORED AS csv OPTIONS ('format.has_header' 'true', \
             'format.delimiter' ';'); select 'to'"
        );
        assert_eq!(
            duckdb_options("COPY t TO 'x' (FORMAT csv, HEADER 0, PARTITION_BY k)"),
            "COPY t TO 'x' STORED AS csv PARTITIONED BY (k) OPTIONS ('format.has_header' 'false')"
        );
        for unchanged in [
            "COPY t TO 'x/' STORED AS PARQUET",
            "SELECT copy FROM t WHERE a IN ('to')",
            "COPY t FROM STDIN (FORMAT csv)",
        ] {
            assert!(
                matches!(duckdb_options(unchanged), Cow::Borrowed(_)),
                "{unchanged}"
            );
        }
    }

    #[test]
    fn options_a_directory_copy_cannot_honour_are_refused() {
        let config = ConfigOptions::default();
        let opts = |kv: &[(&str, &str)]| -> HashMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            file_format("parquet", &opts(&[]), &config).unwrap(),
            FileFormat::Parquet {
                compression: "zstd(3)".into(),
                row_group_rows: 1024 * 1024,
            }
        );
        assert_eq!(
            file_format(
                "csv",
                &opts(&[("format.has_header", "false"), ("format.delimiter", "|")]),
                &config
            )
            .unwrap(),
            FileFormat::Csv {
                header: false,
                delimiter: b'|'
            }
        );
        let e = file_format("parquet", &opts(&[("format.bloom", "x")]), &config).unwrap_err();
        assert!(e.to_string().contains("format.bloom"), "{e}");
        assert!(file_format("csv", &opts(&[("format.delimiter", "ab")]), &config).is_err());
        assert!(file_format("json", &opts(&[("format.compression", "gzip")]), &config).is_err());
        assert!(file_format("avro", &opts(&[]), &config).is_err());
    }
}
