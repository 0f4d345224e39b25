//! Partitioned managed tables: `CREATE TABLE t PARTITIONED BY (col) AS …`
//! (Hive's and Spark's clause) makes a Delta table whose files lie in
//! Hive's directories (`col=value/part-….parquet`), without the partition
//! columns, and whose log records each file's values (`partitionValues`).
//!
//! This module holds what partitioning adds to the rest of [`super`]:
//! taking the clause off the statement (DataFusion plans none), checking
//! the columns, the log entries of the files tasks wrote, and, for scans,
//! each file's values and the files a filter on partition columns leaves.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue, plan_err};
use datafusion::logical_expr::Expr;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{DataType as SqlType, HiveDistributionStyle, Statement};
use strata_executor::write::{NULL_PARTITION, unescape_partition_value};

/// Takes Hive's `PARTITIONED BY (cols)` off a `CREATE TABLE` and returns
/// the partition columns (none: the statement is not one, or has no such
/// clause). A column given with a type there (Hive's form) that the column
/// list lacks is added to it.
pub fn take_partitioning(statement: &mut DfStatement) -> Vec<String> {
    let DfStatement::Statement(s) = statement else {
        return Vec::new();
    };
    let Statement::CreateTable(create) = s.as_mut() else {
        return Vec::new();
    };
    let HiveDistributionStyle::PARTITIONED { columns } =
        std::mem::replace(&mut create.hive_distribution, HiveDistributionStyle::NONE)
    else {
        return Vec::new();
    };
    let mut names = Vec::with_capacity(columns.len());
    for c in columns {
        // Unquoted names are folded to lower case, as DataFusion folds
        // the column list's.
        let name = match c.name.quote_style {
            Some(_) => c.name.value.clone(),
            None => c.name.value.to_lowercase(),
        };
        let declared = create
            .columns
            .iter()
            .any(|d| d.name.value.eq_ignore_ascii_case(&name));
        if c.data_type != SqlType::Unspecified && !declared && create.query.is_none() {
            create.columns.push(c);
        }
        names.push(name);
    }
    names
}

/// Whether a column of type `t` can partition a table: its values are
/// written in directory names and in the log as Delta reads them.
fn partitionable(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Utf8
            | DataType::Date32
            | DataType::Boolean
            | DataType::Decimal128(..)
    )
}

/// Checks `partition_by` against the columns of the table to make (as
/// they are kept): each is a column once, of a type that can partition,
/// and some column is left for the files.
pub fn check(schema: &Schema, partition_by: &[String]) -> Result<()> {
    for (i, c) in partition_by.iter().enumerate() {
        if partition_by[..i].contains(c) {
            return plan_err!("partition column \"{c}\" is named twice");
        }
        let Ok(field) = schema.field_with_name(c) else {
            return plan_err!("partition column \"{c}\" is not a column of the table");
        };
        if !partitionable(field.data_type()) {
            return plan_err!(
                "column \"{c}\" of type {} cannot partition a table (integers, text, dates, \
                 booleans and decimals can)",
                field.data_type()
            );
        }
    }
    if !partition_by.is_empty() && partition_by.len() >= schema.fields().len() {
        return plan_err!("every column is a partition column: the files would hold nothing");
    }
    Ok(())
}

/// The partition values a file's path relative to the table
/// (`a=1/b=x/part-….parquet`) names, as Delta's log keeps them (text;
/// `None` for NULL).
pub fn values_of(
    relative: &str,
    partition_by: &[String],
) -> Result<HashMap<String, Option<String>>> {
    let mut dirs: Vec<&str> = relative.split('/').collect();
    dirs.pop();
    if dirs.len() != partition_by.len() {
        return Err(DataFusionError::Internal(format!(
            "file {relative} is not in a directory per partition column {partition_by:?}"
        )));
    }
    dirs.into_iter()
        .zip(partition_by)
        .map(|(dir, column)| {
            let value = dir
                .split_once('=')
                .map(|(_, v)| v)
                .ok_or_else(|| DataFusionError::Internal(format!("{dir} is not col=value")))?;
            let value = (value != NULL_PARTITION).then(|| unescape_partition_value(value));
            Ok((column.clone(), value))
        })
        .collect()
}

/// A written file's `path` in Delta's log: its object store path relative
/// to the table, as the writer named it segment by segment (delta-rs
/// URI-encodes it in the log and decodes it when reading).
pub fn log_path(relative: &str) -> String {
    object_store::path::Path::from_iter(relative.split('/')).to_string()
}

/// How a table's columns lie in a scan of its files: the files' columns,
/// then the partition columns (as DataFusion's file scans order them).
#[derive(Debug)]
pub struct ScanColumns {
    /// The columns in the files.
    pub file_schema: SchemaRef,
    /// The partition columns, in the table's partitioning order.
    pub partition_fields: Vec<FieldRef>,
    /// For each column of the table, its index in the scan's columns.
    pub scan_index: Vec<usize>,
}

impl ScanColumns {
    /// The layout of `table` partitioned by `partition_by`.
    pub fn new(table: &SchemaRef, partition_by: &[String]) -> Result<ScanColumns> {
        let file_fields: Vec<FieldRef> = table
            .fields()
            .iter()
            .filter(|f| !partition_by.contains(f.name()))
            .cloned()
            .collect();
        let partition_fields = partition_by
            .iter()
            .map(|c| Ok(Arc::new(table.field_with_name(c)?.clone())))
            .collect::<Result<Vec<FieldRef>>>()?;
        let scan_index = table
            .fields()
            .iter()
            .map(|f| match partition_by.iter().position(|c| c == f.name()) {
                Some(p) => file_fields.len() + p,
                None => file_fields
                    .iter()
                    .position(|g| g.name() == f.name())
                    .unwrap_or_default(),
            })
            .collect();
        Ok(ScanColumns {
            file_schema: Arc::new(Schema::new(file_fields)),
            partition_fields,
            scan_index,
        })
    }

    /// The partition columns' names.
    pub fn partition_names(&self) -> Vec<String> {
        self.partition_fields
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// The scan's projection for the table's `projection` (all columns in
    /// the table's order when `None`).
    pub fn projection(&self, projection: Option<&Vec<usize>>) -> Vec<usize> {
        match projection {
            Some(p) => p.iter().map(|&i| self.scan_index[i]).collect(),
            None => self.scan_index.clone(),
        }
    }

    /// A file's partition values, typed, from the log's text.
    pub fn file_values(&self, log: &HashMap<String, Option<String>>) -> Result<Vec<ScalarValue>> {
        self.partition_fields
            .iter()
            .map(|f| match log.get(f.name()).cloned().flatten() {
                Some(text) => ScalarValue::try_from_string(text, f.data_type()),
                None => ScalarValue::try_from(f.data_type()),
            })
            .collect()
    }

    /// Whether `filter` reads partition columns alone (it can then choose
    /// files).
    pub fn only_partitions(&self, filter: &Expr) -> bool {
        let columns = filter.column_refs();
        !columns.is_empty()
            && columns
                .iter()
                .all(|c| self.partition_fields.iter().any(|f| f.name() == &c.name))
    }

    /// Which of the files with partition values `files` (one entry per
    /// file) `filter` keeps (`filter` reads partition columns alone, with
    /// unqualified names).
    pub fn keep(
        &self,
        state: &dyn Session,
        filter: &Expr,
        files: &[Vec<ScalarValue>],
    ) -> Result<Vec<bool>> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let schema = Arc::new(Schema::new(self.partition_fields.clone()));
        let columns = (0..self.partition_fields.len())
            .map(|i| ScalarValue::iter_to_array(files.iter().map(|f| f[i].clone())))
            .collect::<Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let predicate = state.create_physical_expr(filter.clone(), &df_schema)?;
        let result = predicate.evaluate(&batch)?.into_array(files.len())?;
        let Some(mask) = result.as_any().downcast_ref::<BooleanArray>() else {
            return Ok(vec![true; files.len()]);
        };
        Ok((0..files.len())
            .map(|i| mask.is_valid(i) && mask.value(i))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;
    use datafusion::sql::parser::DFParser;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

    fn statement(sql: &str) -> DfStatement {
        DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {})
            .unwrap()
            .pop_front()
            .unwrap()
    }

    #[test]
    fn partitioned_by_comes_off_a_create_table() {
        let mut s = statement("CREATE TABLE t PARTITIONED BY (Mode, \"Ship\") AS SELECT 1 AS mode");
        assert_eq!(take_partitioning(&mut s), vec!["mode", "Ship"]);
        assert!(!s.to_string().contains("PARTITIONED"), "{s}");

        // Hive's form: a typed partition column is a column of the table.
        let mut s = statement("CREATE TABLE t (a INT) PARTITIONED BY (day DATE)");
        assert_eq!(take_partitioning(&mut s), vec!["day"]);
        assert!(s.to_string().contains("day DATE"), "{s}");

        let mut s = statement("CREATE TABLE t (a INT, b TEXT)");
        assert!(take_partitioning(&mut s).is_empty());
        let mut s = statement("SELECT 1");
        assert!(take_partitioning(&mut s).is_empty());
    }

    #[test]
    fn partition_columns_are_checked_by_name_and_type() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("d", DataType::Date32, true),
        ]);
        assert!(check(&schema, &["d".into()]).is_ok());
        let err = |p: &[&str]| {
            let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
            check(&schema, &p).unwrap_err().to_string()
        };
        assert!(err(&["x"]).contains("\"x\" is not a column"));
        assert!(err(&["f"]).contains("cannot partition"));
        assert!(err(&["a", "a"]).contains("named twice"));
        let two = Schema::new(vec![Field::new("a", DataType::Int64, true)]);
        assert!(check(&two, &["a".into()]).is_err());
    }

    #[test]
    fn a_files_directories_are_its_partition_values() {
        let cols = vec!["k".to_string(), "day".to_string()];
        let v = values_of(
            "k=a%2Fb/day=__HIVE_DEFAULT_PARTITION__/part-0.parquet",
            &cols,
        )
        .unwrap();
        assert_eq!(v["k"].as_deref(), Some("a/b"));
        assert_eq!(v["day"], None);
        assert!(values_of("part-0.parquet", &cols).is_err());
        assert_eq!(log_path("k=a b/p.parquet"), "k=a b/p.parquet");
        assert_eq!(log_path("k=a%2Fb/p.parquet"), "k=a%252Fb/p.parquet");
    }

    #[test]
    fn scans_put_partition_columns_last_and_project_back() {
        let table: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("k", DataType::Utf8, true),
            Field::new("b", DataType::Int64, true),
        ]));
        let s = ScanColumns::new(&table, &["k".into()]).unwrap();
        assert_eq!(s.file_schema.fields().len(), 2);
        assert_eq!(s.projection(None), vec![0, 2, 1]);
        assert_eq!(s.projection(Some(&vec![1, 0])), vec![2, 0]);
        let log = HashMap::from([("k".to_string(), Some("x".to_string()))]);
        assert_eq!(s.file_values(&log).unwrap(), vec![ScalarValue::from("x")]);
        let null = s.file_values(&HashMap::new()).unwrap();
        assert!(null[0].is_null());
    }
}
