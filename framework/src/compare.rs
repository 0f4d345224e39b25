//! Comparing result sets: the same rows in any order, exact for integers
//! and strings, within a relative 1e-6 for floats and decimals. How the
//! tests and `strata bench tpch` hold the cluster to single-process
//! DataFusion.

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;

#[derive(Debug, Clone)]
enum Cell {
    Num(f64),
    Str(String),
}

fn is_numeric(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Float16
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(_, _)
            | DataType::Decimal256(_, _)
    )
}

fn cell(numeric: bool, s: String) -> Cell {
    match (numeric, s.parse::<f64>()) {
        (true, Ok(v)) => Cell::Num(v),
        _ => Cell::Str(s),
    }
}

fn rows(batches: &[RecordBatch]) -> Vec<Vec<Cell>> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let mut row = Vec::new();
            for c in b.columns() {
                let s = array_value_to_string(c, r).unwrap_or_default();
                row.push(cell(is_numeric(c.data_type()), s));
            }
            out.push(row);
        }
    }
    sorted(out)
}

/// Whether rows a client read as text (a PostgreSQL client's, say) are
/// those of `reference`: numbers where its columns are floats or decimals.
pub fn same_rows_as_text(reference: &[RecordBatch], text: &[Vec<String>]) -> Result<(), Mismatch> {
    let numeric: Vec<bool> = reference
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| is_numeric(f.data_type()))
                .collect()
        })
        .unwrap_or_default();
    let theirs = text
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(i, s)| cell(numeric.get(i).copied().unwrap_or(false), s.clone()))
                .collect()
        })
        .collect();
    same(&rows(reference), &sorted(theirs))
}

fn sorted(mut out: Vec<Vec<Cell>>) -> Vec<Vec<Cell>> {
    // Order-insensitive comparison (ties under ORDER BY may come out in
    // any order): sort by a rounded rendering.
    out.sort_by_key(|row| {
        row.iter()
            .map(|c| match c {
                Cell::Num(v) => format!("{v:.2}"),
                Cell::Str(s) => s.clone(),
            })
            .collect::<Vec<_>>()
    });
    out
}

/// How two result sets differ: the first difference found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Mismatch {
    /// They hold different numbers of rows.
    #[error("{left} rows vs {right} rows")]
    RowCount {
        /// Rows of the first.
        left: usize,
        /// Rows of the second.
        right: usize,
    },
    /// A row differs (rows compared in sorted order).
    #[error("row {index}: {left} vs {right}")]
    Row {
        /// Its index in sorted order.
        index: usize,
        /// The first's row, as shown.
        left: String,
        /// The second's row, as shown.
        right: String,
    },
}

/// Whether two result sets hold the same rows; the first difference if not.
pub fn same_rows(a: &[RecordBatch], b: &[RecordBatch]) -> Result<(), Mismatch> {
    same(&rows(a), &rows(b))
}

fn same(a: &[Vec<Cell>], b: &[Vec<Cell>]) -> Result<(), Mismatch> {
    if a.len() != b.len() {
        return Err(Mismatch::RowCount {
            left: a.len(),
            right: b.len(),
        });
    }
    for (i, (ra, rb)) in a.iter().zip(b).enumerate() {
        for (ca, cb) in ra.iter().zip(rb) {
            let ok = match (ca, cb) {
                (Cell::Num(x), Cell::Num(y)) => {
                    (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0)
                }
                (Cell::Str(x), Cell::Str(y)) => x == y,
                _ => false,
            };
            if !ok {
                return Err(Mismatch::Row {
                    index: i,
                    left: format!("{ra:?}"),
                    right: format!("{rb:?}"),
                });
            }
        }
    }
    Ok(())
}
