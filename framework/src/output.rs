//! Printing result sets: a table (the default), CSV with a header row, or
//! JSON with one object per line. Shared by `strata sql`, submitted jobs'
//! drivers and job binaries.

use std::io::Write;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table with a header.
    #[default]
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row.
    Json,
}

impl Format {
    /// Its name on the command line (`table`, `csv`, `json`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
}

/// Why results could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The batches could not be formatted.
    #[error("formatting results: {0}")]
    Format(#[from] ArrowError),
    /// The output could not be written.
    #[error("writing results: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes `batches` to `out` in `format`.
pub fn write(
    out: &mut dyn Write,
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(), OutputError> {
    match format {
        Format::Table => {
            let shown = datafusion::arrow::util::pretty::pretty_format_batches_with_schema(
                schema.clone(),
                batches,
            )?;
            writeln!(out, "{shown}")?;
        }
        Format::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            if batches.is_empty() {
                let empty = RecordBatch::new_empty(schema.clone());
                w.write(&empty)?;
            }
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut *out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    out.flush()?;
    Ok(())
}
