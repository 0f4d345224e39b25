//! TPC-H without downloads: the eight tables generated at any scale factor
//! (tpchgen-arrow) and written as Parquet files, and the 22 queries
//! (derived from TPC-H under the TPC Fair Use Policy).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

/// The table names.
pub const TABLES: [&str; 8] = [
    "nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem",
];

/// The 22 queries, by number (1-based); q15 holds three statements.
pub const QUERIES: [&str; 22] = [
    include_str!("../tpch/q1.sql"),
    include_str!("../tpch/q2.sql"),
    include_str!("../tpch/q3.sql"),
    include_str!("../tpch/q4.sql"),
    include_str!("../tpch/q5.sql"),
    include_str!("../tpch/q6.sql"),
    include_str!("../tpch/q7.sql"),
    include_str!("../tpch/q8.sql"),
    include_str!("../tpch/q9.sql"),
    include_str!("../tpch/q10.sql"),
    include_str!("../tpch/q11.sql"),
    include_str!("../tpch/q12.sql"),
    include_str!("../tpch/q13.sql"),
    include_str!("../tpch/q14.sql"),
    include_str!("../tpch/q15.sql"),
    include_str!("../tpch/q16.sql"),
    include_str!("../tpch/q17.sql"),
    include_str!("../tpch/q18.sql"),
    include_str!("../tpch/q19.sql"),
    include_str!("../tpch/q20.sql"),
    include_str!("../tpch/q21.sql"),
    include_str!("../tpch/q22.sql"),
];

fn write_table(
    dir: &Path,
    name: &str,
    batches: impl Iterator<
        Item = std::result::Result<RecordBatch, datafusion::arrow::error::ArrowError>,
    >,
) -> Result<PathBuf> {
    let table_dir = dir.join(name);
    std::fs::create_dir_all(&table_dir).map_err(|e| DataFusionError::External(Box::new(e)))?;
    let path = table_dir.join("part-0.parquet");
    let mut batches = batches.peekable();
    let schema = match batches.peek() {
        Some(Ok(b)) => b.schema(),
        Some(Err(e)) => {
            return Err(DataFusionError::Execution(format!(
                "generating tpch table {name}: {e}"
            )));
        }
        None => {
            return Err(DataFusionError::Plan(format!(
                "tpch table {name} generated no rows"
            )));
        }
    };
    let file = std::fs::File::create(&path).map_err(|e| DataFusionError::External(Box::new(e)))?;
    let mut w = ArrowWriter::try_new(file, schema, None)?;
    for b in batches {
        w.write(&b?)?;
    }
    w.close()?;
    Ok(table_dir)
}

/// Generates the eight tables at scale factor `sf` as Parquet under `dir`
/// (one directory per table).
pub fn generate_parquet(sf: f64, dir: &Path) -> Result<()> {
    let b = 8192;
    write_table(
        dir,
        "nation",
        NationArrow::new(NationGenerator::new(sf, 1, 1)).with_batch_size(b),
    )?;
    write_table(
        dir,
        "region",
        RegionArrow::new(RegionGenerator::new(sf, 1, 1)).with_batch_size(b),
    )?;
    write_table(
        dir,
        "part",
        PartArrow::new(PartGenerator::new(sf, 1, 1)).with_batch_size(b),
    )?;
    write_table(
        dir,
        "supplier",
        SupplierArrow::new(SupplierGenerator::new(sf, 1, 1)).with_batch_size(b),
    )?;
    write_table(
        dir,
        "partsupp",
        PartSuppArrow::new(PartSuppGenerator::new(sf, 1, 1)).with_batch_size(b),
    )?;
    write_table(
        dir,
        "customer",
        CustomerArrow::new(CustomerGenerator::new(sf, 1, 1)).with_batch_size(b),
    )?;
    write_table(
        dir,
        "orders",
        OrderArrow::new(OrderGenerator::new(sf, 1, 1)).with_batch_size(b),
    )?;
    write_table(
        dir,
        "lineitem",
        LineItemArrow::new(LineItemGenerator::new(sf, 1, 1)).with_batch_size(b),
    )?;
    Ok(())
}

/// Registers the tables generated under `dir` in `ctx`.
pub async fn register_parquet(ctx: &SessionContext, dir: &Path) -> Result<()> {
    for t in TABLES {
        let path = dir.join(t);
        ctx.register_parquet(
            t,
            path.to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        )
        .await?;
    }
    Ok(())
}

/// The statements of query `n` (1-based).
pub fn statements(n: usize) -> Vec<String> {
    QUERIES[n - 1]
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Shared handle type for contexts in tests and benchmarks.
pub type Ctx = Arc<SessionContext>;
