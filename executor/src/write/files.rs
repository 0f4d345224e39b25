//! The files a [`super::TableWriterExec`] task writes: one per partition
//! directory (`col=value/…`, Hive's layout) it saw rows for, in Parquet,
//! CSV or newline-delimited JSON.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::compute::{
    SortColumn, cast, lexsort_to_indices, partition, take, take_record_batch,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::arrow::arrow_writer::ArrowWriterOptions;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use tokio::io::AsyncWriteExt;

/// The format of a write's files.
#[derive(Clone, Debug, PartialEq)]
pub enum FileFormat {
    /// Parquet, with a codec as Parquet names it (`snappy`, `zstd(3)`,
    /// `uncompressed`…).
    Parquet {
        /// The compression codec.
        compression: String,
        /// Rows per row group at most (a writer holds one row group in
        /// memory until it is full).
        row_group_rows: usize,
    },
    /// CSV.
    Csv {
        /// Whether each file starts with a header line.
        header: bool,
        /// The field delimiter.
        delimiter: u8,
    },
    /// Newline-delimited JSON, one object per row.
    Json,
}

/// Rows per Parquet row group unless a write says otherwise (Parquet's
/// and DataFusion's default).
pub const DEFAULT_ROW_GROUP_ROWS: usize = 1024 * 1024;

impl Default for FileFormat {
    fn default() -> Self {
        FileFormat::Parquet {
            compression: "snappy".into(),
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
        }
    }
}

impl FileFormat {
    /// The end of the files' names.
    pub fn extension(&self) -> &'static str {
        match self {
            FileFormat::Parquet { compression, .. } if compression == "snappy" => "snappy.parquet",
            FileFormat::Parquet { .. } => "parquet",
            FileFormat::Csv { .. } => "csv",
            FileFormat::Json => "json",
        }
    }

    /// Refuses a codec Parquet does not know, before any task runs.
    pub fn validate(&self) -> Result<()> {
        if let FileFormat::Parquet {
            compression,
            row_group_rows,
        } = self
        {
            parquet_codec(compression)?;
            if *row_group_rows == 0 {
                return plan_err!("a row group holds at least one row");
            }
        }
        Ok(())
    }
}

fn parquet_codec(name: &str) -> Result<Compression> {
    name.parse::<Compression>()
        .map_err(|e| DataFusionError::Plan(format!("unknown Parquet compression {name:?}: {e}")))
}

/// What a write lays out: its format and the columns whose values name
/// directories (and are not written in the files).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteSpec {
    /// The files' format.
    pub format: FileFormat,
    /// Columns whose values make the directories `col=value/`, in order.
    pub partition_by: Vec<String>,
}

impl WriteSpec {
    /// Checks the spec against the rows to write: the partition columns
    /// exist and at least one column is left for the files.
    pub fn validate(&self, schema: &SchemaRef) -> Result<()> {
        self.format.validate()?;
        for c in &self.partition_by {
            if schema.index_of(c).is_err() {
                return plan_err!("PARTITION_BY column {c:?} is not among the query's columns");
            }
        }
        if !self.partition_by.is_empty() && self.partition_by.len() >= schema.fields().len() {
            return plan_err!("every column is a partition column: the files would hold nothing");
        }
        Ok(())
    }
}

/// Hive's name for a partition whose value is NULL.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Splits a batch by the values of `partition_by`: for each directory
/// (`a=1/b=x`, or `""` without partition columns), its rows without the
/// partition columns, directories in the order of their values. The rows
/// are grouped by Arrow's sort and partition kernels (one take of the
/// batch, slices of it per directory), not row by row.
pub fn split(batch: &RecordBatch, partition_by: &[String]) -> Result<Vec<(String, RecordBatch)>> {
    if partition_by.is_empty() {
        return Ok(vec![(String::new(), batch.clone())]);
    }
    let schema = batch.schema();
    let mut positions = Vec::with_capacity(partition_by.len());
    let mut keys: Vec<ArrayRef> = Vec::with_capacity(partition_by.len());
    for c in partition_by {
        let i = schema.index_of(c)?;
        positions.push(i);
        keys.push(cast(batch.column(i), &DataType::Utf8)?);
    }
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !positions.contains(i))
        .collect();
    let order: Vec<SortColumn> = keys
        .iter()
        .map(|k| SortColumn {
            values: k.clone(),
            options: None,
        })
        .collect();
    let indices = lexsort_to_indices(&order, None)?;
    let sorted: Vec<ArrayRef> = keys
        .iter()
        .map(|k| take(k.as_ref(), &indices, None))
        .collect::<std::result::Result<_, _>>()?;
    let rest = take_record_batch(&batch.project(&keep)?, &indices)?;
    let mut out = Vec::new();
    for range in partition(&sorted)?.ranges() {
        let mut dir = String::new();
        for (values, name) in sorted.iter().zip(partition_by) {
            let values = values
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| DataFusionError::Internal("a cast to Utf8 is not Utf8".into()))?;
            if !dir.is_empty() {
                dir.push('/');
            }
            dir.push_str(&escape(name));
            dir.push('=');
            if values.is_null(range.start) {
                dir.push_str(NULL_PARTITION);
            } else {
                dir.push_str(&escape(values.value(range.start)));
            }
        }
        out.push((dir, rest.slice(range.start, range.end - range.start)));
    }
    Ok(out)
}

/// Hive's escaping of a partition value: characters a path or a
/// `name=value` pair would misread become `%XX`.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_control() || "\"#%'*/:=?\\{[]^".contains(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value a partition directory's name escapes ([`escape`]'s inverse;
/// a `%` not followed by two hex digits stays as it is).
pub fn unescape_partition_value(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The schema files are written in: the input's, every column nullable.
/// String and binary views are written as they are; Parquet files carry no
/// Arrow schema, so readers see Parquet's plain strings and binaries.
pub fn file_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), f.data_type().clone(), true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// One file being written.
pub struct FileWriter {
    path: Path,
    rows: i64,
    sink: Sink,
}

enum Sink {
    Parquet(Box<AsyncArrowWriter<BufWriter>>),
    Text {
        out: Box<BufWriter>,
        csv_header: Option<bool>,
        delimiter: u8,
    },
}

impl FileWriter {
    /// Starts `path` in `store`, for batches of `schema`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        path: Path,
        schema: SchemaRef,
        format: &FileFormat,
    ) -> Result<FileWriter> {
        let out = BufWriter::new(store, path.clone());
        let sink = match format {
            FileFormat::Parquet {
                compression,
                row_group_rows,
            } => {
                let props = WriterProperties::builder()
                    .set_compression(parquet_codec(compression)?)
                    .set_max_row_group_row_count(Some(*row_group_rows))
                    .build();
                Sink::Parquet(Box::new(AsyncArrowWriter::try_new_with_options(
                    out,
                    schema,
                    ArrowWriterOptions::new()
                        .with_properties(props)
                        .with_skip_arrow_metadata(true),
                )?))
            }
            FileFormat::Csv { header, delimiter } => Sink::Text {
                out: Box::new(out),
                csv_header: Some(*header),
                delimiter: *delimiter,
            },
            FileFormat::Json => Sink::Text {
                out: Box::new(out),
                csv_header: None,
                delimiter: 0,
            },
        };
        Ok(FileWriter {
            path,
            rows: 0,
            sink,
        })
    }

    /// Appends a batch (of the schema the writer was made for).
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as i64;
        match &mut self.sink {
            Sink::Parquet(w) => w.write(batch).await?,
            Sink::Text {
                out,
                csv_header,
                delimiter,
            } => {
                let bytes = match csv_header {
                    Some(header) => {
                        let mut w = datafusion::arrow::csv::WriterBuilder::new()
                            .with_header(*header)
                            .with_delimiter(*delimiter)
                            .build(Vec::new());
                        w.write(batch)?;
                        // The header goes at the top of the file only.
                        *header = false;
                        w.into_inner()
                    }
                    None => {
                        let mut w = datafusion::arrow::json::LineDelimitedWriter::new(Vec::new());
                        w.write(batch)?;
                        w.finish()?;
                        w.into_inner()
                    }
                };
                out.write_all(&bytes).await?;
            }
        }
        Ok(())
    }

    /// Finishes the file; its path and row count.
    pub async fn close(self) -> Result<(Path, i64)> {
        match self.sink {
            Sink::Parquet(w) => {
                w.close().await?;
            }
            Sink::Text { mut out, .. } => out.shutdown().await?,
        }
        Ok((self.path, self.rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;

    #[test]
    fn rows_split_by_partition_values_in_their_order_without_their_columns() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int32, false),
            Field::new("region", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![1, 2, 3, 4])),
                Arc::new(StringArray::from(vec![
                    Some("EU/west"),
                    None,
                    Some("EU/west"),
                    Some("a=b"),
                ])),
            ],
        )
        .unwrap();
        let parts = split(&batch, &["region".into()]).unwrap();
        let dirs: Vec<&str> = parts.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(
            dirs,
            [
                "region=__HIVE_DEFAULT_PARTITION__",
                "region=EU%2Fwest",
                "region=a%3Db"
            ]
        );
        let first = &parts[1].1;
        assert_eq!(
            first.num_columns(),
            1,
            "the partition column is not in the file"
        );
        let xs = first
            .column(0)
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap();
        let mut xs = xs.values().to_vec();
        xs.sort_unstable();
        assert_eq!(xs, [1, 3]);
        for value in ["EU/west", "a=b", "50%", "é:?"] {
            assert_eq!(unescape_partition_value(&escape(value)), value);
        }
        assert_eq!(unescape_partition_value("100%zz"), "100%zz");
        let whole = split(&batch, &[]).unwrap();
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].0, "");
        assert_eq!(whole[0].1.num_columns(), 2);
    }

    #[test]
    fn unknown_codecs_and_missing_partition_columns_are_refused() {
        let bad = FileFormat::Parquet {
            compression: "lz77".into(),
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
        };
        assert!(bad.validate().is_err());
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let spec = WriteSpec {
            format: FileFormat::Json,
            partition_by: vec!["y".into()],
        };
        assert!(
            spec.validate(&schema)
                .unwrap_err()
                .to_string()
                .contains("\"y\"")
        );
        let all = WriteSpec {
            format: FileFormat::Json,
            partition_by: vec!["x".into()],
        };
        assert!(all.validate(&schema).is_err());
    }
}
