//! `COPY table [(columns)] FROM STDIN` (psql's `\copy … from`): rows in
//! PostgreSQL's text or CSV format, sent over the protocol's copy
//! sub-protocol, appended to a table in one write.
//!
//! The rows are read as text, column by column, then cast to the table's
//! types (a value that does not cast fails the whole `COPY`, which writes
//! nothing); columns the statement does not list are NULL.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::TableReference;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, cast, col, lit};
use datafusion::sql::planner::object_name_to_table_reference;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};

use crate::error::GatewayError;
use crate::session::GatewaySession;

/// A `COPY … FROM STDIN` statement.
#[derive(Clone, Debug, PartialEq)]
pub struct CopyIn {
    /// The table rows go to.
    pub table: TableReference,
    /// The columns the rows hold, in order (empty: all the table's).
    pub columns: Vec<String>,
    /// CSV (else PostgreSQL's text format).
    pub csv: bool,
    /// The first line is a header, skipped (CSV only).
    pub header: bool,
    /// Between fields: a tab (text) or a comma (CSV) unless given.
    pub delimiter: char,
    /// What a NULL is written as: `\N` (text) or an unquoted empty field
    /// (CSV) unless given.
    pub null: String,
}

impl CopyIn {
    /// The statement as a `COPY … FROM STDIN`, if it is one.
    pub fn from_statement(s: &Statement) -> Option<Result<CopyIn, GatewayError>> {
        let Statement::Copy {
            source,
            to: false,
            target: CopyTarget::Stdin,
            options,
            legacy_options,
            ..
        } = s
        else {
            return None;
        };
        let CopySource::Table {
            table_name,
            columns,
        } = source
        else {
            return Some(Err(GatewayError::Unsupported(
                "COPY (query) FROM STDIN: copy into a table".into(),
            )));
        };
        let table = match object_name_to_table_reference(table_name.clone(), true) {
            Ok(t) => t,
            Err(e) => return Some(Err(e.into())),
        };
        let mut csv = false;
        let (mut header, mut delimiter, mut null) = (false, None, None);
        for o in options {
            match o {
                CopyOption::Format(f) if f.value.eq_ignore_ascii_case("csv") => csv = true,
                CopyOption::Format(f) if f.value.eq_ignore_ascii_case("text") => csv = false,
                CopyOption::Format(f) => {
                    return Some(Err(GatewayError::Unsupported(format!(
                        "COPY … FROM STDIN (FORMAT {f}): text and csv are supported"
                    ))));
                }
                CopyOption::Header(h) => header = *h,
                CopyOption::Delimiter(d) => delimiter = Some(*d),
                CopyOption::Null(n) => null = Some(n.clone()),
                _ => {}
            }
        }
        for o in legacy_options {
            match o {
                CopyLegacyOption::Csv(more) => {
                    csv = true;
                    header |= more
                        .iter()
                        .any(|m| matches!(m, CopyLegacyCsvOption::Header));
                }
                CopyLegacyOption::Header => header = true,
                CopyLegacyOption::Delimiter(d) => delimiter = Some(*d),
                CopyLegacyOption::Null(n) => null = Some(n.clone()),
                _ => {}
            }
        }
        Some(Ok(CopyIn {
            table,
            columns: columns.iter().map(|c| c.value.to_lowercase()).collect(),
            csv,
            header: header && csv,
            delimiter: delimiter.unwrap_or(if csv { ',' } else { '\t' }),
            null: null.unwrap_or_else(|| if csv { String::new() } else { "\\N".into() }),
        }))
    }

    /// The rows of `data`, each a value (or NULL) per field.
    pub fn rows(&self, data: &[u8]) -> Result<Vec<Vec<Option<String>>>, GatewayError> {
        let text = std::str::from_utf8(data)
            .map_err(|e| GatewayError::InvalidValue(format!("COPY data is not UTF-8: {e}")))?;
        let mut rows = if self.csv {
            csv_rows(text, self.delimiter, &self.null)?
        } else {
            text_rows(text, self.delimiter, &self.null)
        };
        if self.header && !rows.is_empty() {
            rows.remove(0);
        }
        Ok(rows)
    }
}

/// PostgreSQL's text format: a row per line, `\.` ends the data,
/// backslash escapes.
fn text_rows(text: &str, delimiter: char, null: &str) -> Vec<Vec<Option<String>>> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line == "\\." {
            break;
        }
        let row = line
            .split(delimiter)
            .map(|f| (f != null).then(|| unescape(f)))
            .collect();
        rows.push(row);
    }
    rows
}

fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('v') => out.push('\u{b}'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// CSV: fields quoted with `"` (a doubled `"` inside), quoted fields may
/// hold the delimiter and newlines; an unquoted field equal to `null` is
/// NULL.
fn csv_rows(
    text: &str,
    delimiter: char,
    null: &str,
) -> Result<Vec<Vec<Option<String>>>, GatewayError> {
    let mut rows = Vec::new();
    let mut row: Vec<Option<String>> = Vec::new();
    let mut field = String::new();
    let (mut quoted, mut in_quotes, mut at_start) = (false, false, true);
    let mut chars = text.chars().peekable();
    let end_field = |field: &mut String, quoted: &mut bool, row: &mut Vec<Option<String>>| {
        let value = std::mem::take(field);
        row.push((*quoted || value != null).then_some(value));
        *quoted = false;
    };
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => {
                in_quotes = true;
                quoted = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if at_start && field.is_empty() && row.is_empty() {
                    continue;
                }
                if row.is_empty() && field == "\\." && !quoted {
                    break;
                }
                end_field(&mut field, &mut quoted, &mut row);
                rows.push(std::mem::take(&mut row));
                at_start = true;
                continue;
            }
            c if c == delimiter => end_field(&mut field, &mut quoted, &mut row),
            c => field.push(c),
        }
        at_start = false;
    }
    if in_quotes {
        return Err(GatewayError::InvalidValue(
            "COPY data ends inside a quoted CSV field".into(),
        ));
    }
    let nothing_left = row.is_empty() && (field == "\\." || (field.is_empty() && !quoted));
    if !nothing_left {
        end_field(&mut field, &mut quoted, &mut row);
        rows.push(row);
    }
    Ok(rows)
}

impl GatewaySession {
    /// How many columns a `COPY … FROM STDIN` reads per row.
    pub async fn copy_width(&self, copy: &CopyIn) -> Result<usize, GatewayError> {
        if !copy.columns.is_empty() {
            return Ok(copy.columns.len());
        }
        let table = self.context().table_provider(copy.table.clone()).await?;
        Ok(table.schema().fields().len())
    }

    /// Appends the rows `data` holds (as `copy` reads them) to its table,
    /// in one write; returns how many.
    pub async fn copy_in(&self, copy: &CopyIn, data: &[u8]) -> Result<u64, GatewayError> {
        let ctx = self.context();
        let table = ctx.table_provider(copy.table.clone()).await?;
        let schema = table.schema();
        let columns: Vec<String> = if copy.columns.is_empty() {
            schema.fields().iter().map(|f| f.name().clone()).collect()
        } else {
            copy.columns.clone()
        };
        for c in &columns {
            if schema.field_with_name(c).is_err() {
                return Err(DataFusionError::Plan(format!(
                    "column \"{c}\" of relation \"{}\" does not exist",
                    copy.table
                ))
                .into());
            }
        }
        let rows = copy.rows(data)?;
        if let Some((i, r)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != columns.len())
        {
            return Err(GatewayError::InvalidValue(format!(
                "COPY line {}: {} fields, the statement names {} columns",
                i + 1 + usize::from(copy.header),
                r.len(),
                columns.len()
            )));
        }
        let count = rows.len() as u64;
        let strict = CastOptions {
            safe: false,
            ..Default::default()
        };
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
        let mut fields = Vec::with_capacity(columns.len());
        for (i, name) in columns.iter().enumerate() {
            let text = StringArray::from_iter(rows.iter().map(|r| r[i].as_deref()));
            let to = schema
                .field_with_name(name)
                .map_err(DataFusionError::from)?
                .data_type()
                .clone();
            let array = cast_with_options(&text, &to, &strict)
                .map_err(|e| GatewayError::InvalidValue(format!("COPY column \"{name}\": {e}")))?;
            fields.push(Field::new(name, to, true));
            arrays.push(array);
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .map_err(DataFusionError::from)?;
        let exprs: Vec<Expr> = schema
            .fields()
            .iter()
            .map(|f| {
                let value = if columns.contains(f.name()) {
                    col(format!("\"{}\"", f.name()))
                } else {
                    cast(
                        lit(datafusion::common::ScalarValue::Null),
                        f.data_type().clone(),
                    )
                };
                value.alias(f.name())
            })
            .collect();
        ctx.read_batch(batch)?
            .select(exprs)?
            .write_table(&copy.table.to_string(), DataFrameWriteOptions::new())
            .await?;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(sql: &str) -> CopyIn {
        let s = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            sql,
        )
        .unwrap()
        .pop()
        .unwrap();
        CopyIn::from_statement(&s).unwrap().unwrap()
    }

    #[test]
    fn text_and_csv_rows_as_psql_sends_them() {
        let text = copy("COPY t (a, b) FROM STDIN");
        assert_eq!(text.columns, ["a", "b"]);
        assert_eq!(
            text.rows(b"1\tx\\ty\n2\t\\N\n\\.\n").unwrap(),
            vec![
                vec![Some("1".into()), Some("x\ty".into())],
                vec![Some("2".into()), None]
            ]
        );
        let csv = copy("COPY t FROM STDIN WITH (FORMAT csv, HEADER true)");
        assert!(csv.csv && csv.header);
        assert_eq!(
            csv.rows(b"a,b\n1,\"x, \"\"y\"\"\"\n2,\n3,\"\"\r\n")
                .unwrap(),
            vec![
                vec![Some("1".into()), Some("x, \"y\"".into())],
                vec![Some("2".into()), None],
                vec![Some("3".into()), Some(String::new())],
            ]
        );
        let legacy = copy("COPY t FROM STDIN CSV HEADER");
        assert!(legacy.csv && legacy.header);
        assert!(csv.rows(b"a,b\n1,\"open").is_err());
    }
}
