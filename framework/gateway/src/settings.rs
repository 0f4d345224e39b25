//! A session's PostgreSQL face: the version it reports, its settings
//! (`SET`/`SHOW` names and defaults, `statement_timeout`), and the names
//! its result columns get.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::GatewayError;

/// The PostgreSQL version the gateway speaks as (`server_version`,
/// `version()`); clients pick their catalog queries by it. 14: the catalog
/// has no publication column lists nor row filters (15's `\d` asks for
/// them with a correlated `generate_series`), and 14's queries are what
/// every newer psql sends a 14 server.
pub const PG_VERSION: &str = "14.0";

/// What `SELECT version()` answers: clients parse `PostgreSQL X.Y`.
pub fn version_string() -> String {
    format!(
        "PostgreSQL {PG_VERSION} (Strata {} on DataFusion {}), {}-{}",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION,
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}

/// Settings DataFusion (or Strata's engine) owns: `SET`/`SHOW` pass them
/// through.
pub(crate) fn is_engine_setting(name: &str) -> bool {
    let name = name.to_lowercase();
    name.starts_with("datafusion.") || name.starts_with("strata.")
}

/// PostgreSQL's name for a setting (`transaction isolation level` is
/// `transaction_isolation`; names are case-insensitive).
pub(crate) fn setting_name(name: &str) -> String {
    let name = name.trim().to_lowercase();
    match name.as_str() {
        "transaction isolation level" => "transaction_isolation".to_owned(),
        "time zone" => "timezone".to_owned(),
        _ => name,
    }
}

pub(crate) fn show_schema(name: &str) -> SchemaRef {
    if name == "all" {
        Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("setting", DataType::Utf8, false),
        ]))
    } else {
        Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]))
    }
}

/// The settings a session starts with: what PostgreSQL clients read.
pub(crate) fn default_settings(user: &str, application: &str) -> BTreeMap<String, String> {
    [
        ("application_name", application),
        ("client_encoding", "UTF8"),
        ("datestyle", "ISO, MDY"),
        ("default_table_access_method", "heap"),
        ("default_transaction_isolation", "read committed"),
        ("default_transaction_read_only", "off"),
        ("extra_float_digits", "1"),
        ("integer_datetimes", "on"),
        ("intervalstyle", "postgres"),
        ("is_superuser", "on"),
        ("lc_collate", "C"),
        ("lc_ctype", "C"),
        ("max_identifier_length", "63"),
        ("search_path", "\"$user\", public"),
        ("server_encoding", "UTF8"),
        ("server_version", PG_VERSION),
        ("server_version_num", "140000"),
        ("session_authorization", user),
        ("standard_conforming_strings", "on"),
        ("statement_timeout", "0"),
        ("timezone", "UTC"),
        ("transaction_isolation", "read committed"),
        ("transaction_read_only", "off"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `statement_timeout`'s value: milliseconds, or with a unit (`5s`,
/// `2min`); 0 is none.
pub(crate) fn parse_timeout(value: &str) -> Result<Option<Duration>, GatewayError> {
    let v = value.trim().trim_matches('\'').to_lowercase();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        GatewayError::InvalidValue(format!("invalid value for statement_timeout: {value}"))
    })?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" => n * 1000,
        "min" => n * 60_000,
        "h" => n * 3_600_000,
        _ => {
            return Err(GatewayError::InvalidValue(format!(
                "invalid value for statement_timeout: {value} (units: ms, s, min, h)"
            )));
        }
    };
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

/// A query's columns named as PostgreSQL names them: a plain name stays,
/// a function's result is named after the function (`count`, `sum`), any
/// other expression is `?column?`.
pub(crate) fn pg_names(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_name(pg_name(f.name())))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn pg_name(name: &str) -> String {
    let is_word = |s: &str| {
        s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let Some((head, _)) = name.split_once('(') else {
        return name.to_owned();
    };
    if is_word(head) {
        // `count(*)`, `sum(l.x * Int64(2))`: the function's name.
        head.to_owned()
    } else if !head.is_empty() && head.chars().all(|c| c.is_ascii_alphanumeric()) {
        // `Int64(1)`, `Utf8("x")`: a literal.
        "?column?".to_owned()
    } else {
        // Anything else may be an alias (`"Total (USD)"`): kept.
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_timeouts_read_as_postgresql_reads_them() {
        assert_eq!(parse_timeout("0").unwrap(), None);
        assert_eq!(
            parse_timeout("250").unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_timeout("'5s'").unwrap(), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_timeout("2min").unwrap(),
            Some(Duration::from_secs(120))
        );
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("5 fortnights").is_err());
    }

    #[test]
    fn result_columns_are_named_as_postgresql_names_them() {
        assert_eq!(pg_name("n_name"), "n_name");
        assert_eq!(pg_name("Int64(1)"), "?column?");
        assert_eq!(pg_name("count(*)"), "count");
        assert_eq!(pg_name("sum(lineitem.l_quantity * Int64(2))"), "sum");
        assert_eq!(pg_name("Total"), "Total");
        assert_eq!(pg_name("Result data type"), "Result data type");
        assert_eq!(pg_name("Total (USD)"), "Total (USD)");
    }

    #[test]
    fn setting_names_are_postgresqls() {
        assert_eq!(
            setting_name("Transaction Isolation Level"),
            "transaction_isolation"
        );
        assert_eq!(setting_name("TimeZone"), "timezone");
        assert!(is_engine_setting("datafusion.execution.batch_size"));
        assert!(!is_engine_setting("search_path"));
        assert!(version_string().starts_with("PostgreSQL 14.0 (Strata"));
    }
}
