//! Functions the gateway adds to every session: what PostgreSQL clients
//! call that DataFusion and `pg_catalog` lack.
//!
//! * `version()`: `PostgreSQL 14.0 (Strata …)`, as clients parse it.
//! * `pg_relation_is_publishable(rel)`: true for every relation (all are
//!   ordinary tables); takes the oid as a number or as the untyped literal
//!   psql gives (`'16455'`). `pg_function_is_visible`, `pg_type_is_visible`
//!   and `pg_collation_is_visible` alike: true (the search path holds
//!   `public` and `pg_catalog`, where everything is).
//! * `obj_description`, `col_description`, `shobj_description`: NULL (no
//!   object has a comment); `pg_get_function_result`,
//!   `pg_get_function_arguments`: NULL (there are no user functions);
//!   `pg_table_size`: NULL (not known yet) — what psql's `\df`, `\dT`,
//!   `\dn+` and `\dt+` ask.
//! * `pg_get_serial_sequence`: NULL (there are no sequences);
//!   `pg_get_indexdef`, `pg_get_constraintdef`: NULL (tables have no
//!   indexes or constraints);
//!   `json_build_object(k1, v1, …)`: the JSON object of those pairs, as
//!   text — what SQLAlchemy's column reflection asks.
//! * `pg_size_pretty(bytes)`: `8192 bytes`, `16 kB`, `10 MB`, as
//!   PostgreSQL rounds them.
//! * `to_regtype(name)`: a type's oid from `pg_catalog.pg_type` by its
//!   name or an alias (`integer`, `character varying`, `int4[]`,
//!   `pg_catalog.text`), NULL when there is none — psycopg asks it at
//!   connect time for `hstore`.
//! * `pg_like_pattern(p, c)`: a `LIKE` pattern whose escape is `c`, with
//!   backslash escapes instead (see [`crate::rewrite`]).
//! * `pg_text_array(v)`: an array given in PostgreSQL's text form
//!   (`{a,b,"c d",NULL}`) as a list of strings; a list passes through.
//!   `pg_catalog`'s array columns (`pg_policy.polroles`, …) hold that text
//!   form, and [`crate::rewrite`] reads the right side of `= ANY(…)` through
//!   it, so `oid = ANY(polroles)` plans whichever form the column has.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{
    Array, ArrayRef, Int32Array, ListBuilder, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::cast::as_string_array;
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};
use datafusion_pg_catalog::pg_catalog::PgCatalogStaticTables;

use crate::settings::version_string;

/// The functions, to register in a session.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        version(),
        true_where_set("pg_relation_is_publishable"),
        true_where_set("pg_function_is_visible"),
        true_where_set("pg_type_is_visible"),
        true_where_set("pg_collation_is_visible"),
        size_pretty(),
        null_of("obj_description", DataType::Utf8),
        null_of("col_description", DataType::Utf8),
        null_of("shobj_description", DataType::Utf8),
        null_of("pg_get_function_result", DataType::Utf8),
        null_of("pg_get_function_arguments", DataType::Utf8),
        null_of("pg_table_size", DataType::Int64),
        null_of("pg_get_serial_sequence", DataType::Utf8),
        null_of("pg_get_indexdef", DataType::Utf8),
        null_of("pg_get_constraintdef", DataType::Utf8),
        ScalarUDF::new_from_impl(JsonBuildObject::new()),
        ScalarUDF::new_from_impl(PgTextArray::new()),
        to_regtype(),
        like_pattern(),
    ]
}

/// `version()` as PostgreSQL clients parse it.
fn version() -> ScalarUDF {
    let version = version_string();
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                version.clone(),
            ))))
        }),
    )
}

/// `pg_catalog.pg_type`'s oids by name, read once.
fn type_oids() -> &'static HashMap<String, i32> {
    static OIDS: OnceLock<HashMap<String, i32>> = OnceLock::new();
    OIDS.get_or_init(|| {
        let mut oids = HashMap::new();
        let Ok(tables) = PgCatalogStaticTables::try_new() else {
            return oids;
        };
        for batch in tables.pg_type.data() {
            let (Some(names), Some(ids)) = (
                batch
                    .column_by_name("typname")
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>()),
                batch
                    .column_by_name("oid")
                    .and_then(|c| c.as_any().downcast_ref::<Int32Array>()),
            ) else {
                continue;
            };
            for (name, id) in names.iter().zip(ids.iter()) {
                if let (Some(name), Some(id)) = (name, id) {
                    oids.insert(name.to_owned(), id);
                }
            }
        }
        oids
    })
}

/// The `pg_type` name of a type named as SQL names it.
fn type_name(sql: &str) -> String {
    let name = sql.trim().to_lowercase();
    let name = name
        .strip_prefix("pg_catalog.")
        .unwrap_or(&name)
        .trim_matches('"');
    if let Some(element) = name.strip_suffix("[]") {
        return format!("_{}", type_name(element));
    }
    let alias = match name {
        "integer" | "int" => "int4",
        "bigint" => "int8",
        "smallint" => "int2",
        "real" => "float4",
        "double precision" | "float" => "float8",
        "boolean" => "bool",
        "character varying" => "varchar",
        "character" | "char" => "bpchar",
        "decimal" => "numeric",
        "timestamp without time zone" => "timestamp",
        "timestamp with time zone" => "timestamptz",
        "time without time zone" => "time",
        "time with time zone" => "timetz",
        other => other,
    };
    alias.to_owned()
}

/// `pattern` with escape `escape` in backslash escapes.
fn backslash_escapes(pattern: &str, escape: char) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == escape {
            out.push('\\');
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    out
}

/// `pg_like_pattern(pattern, escape)`.
fn like_pattern() -> ScalarUDF {
    create_udf(
        "pg_like_pattern",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let [pattern, escape] = args else {
                return exec_err!("pg_like_pattern takes a pattern and an escape character");
            };
            let rows = match (pattern, escape) {
                (ColumnarValue::Array(a), _) | (_, ColumnarValue::Array(a)) => a.len(),
                _ => 1,
            };
            let patterns = pattern.to_array(rows)?;
            let escapes = escape.to_array(rows)?;
            let (patterns, escapes) = (as_string_array(&patterns)?, as_string_array(&escapes)?);
            let out: StringArray = patterns
                .iter()
                .zip(escapes.iter())
                .map(|(p, e)| {
                    let p = p?;
                    Some(match e.and_then(|e| e.chars().next()) {
                        Some(e) => backslash_escapes(p, e),
                        None => p.to_owned(),
                    })
                })
                .collect();
            let scalar = matches!(
                (pattern, escape),
                (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_))
            );
            shaped(scalar, Arc::new(out))
        }),
    )
}

/// `to_regtype(name)`.
fn to_regtype() -> ScalarUDF {
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let [arg] = args else {
                return exec_err!("to_regtype takes one argument");
            };
            let names = arg.to_array(1)?;
            let names = as_string_array(&names)?;
            let oids: Int32Array = names
                .iter()
                .map(|n| n.and_then(|n| type_oids().get(&type_name(n)).copied()))
                .collect();
            shaped(matches!(arg, ColumnarValue::Scalar(_)), Arc::new(oids))
        }),
    )
}

/// A function of one argument of any type, true where it is not null.
fn true_where_set(name: &'static str) -> ScalarUDF {
    ScalarUDF::new_from_impl(AnyArgument {
        name,
        signature: Signature::any(1, Volatility::Stable),
    })
}

/// A function's result in the shape of its input: a scalar for scalar
/// arguments (its one row), else the array.
fn shaped(scalar: bool, out: ArrayRef) -> Result<ColumnarValue> {
    Ok(if scalar {
        ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
    } else {
        ColumnarValue::Array(out)
    })
}

/// A function of any arguments whose value is NULL of type `t`.
fn null_of(name: &'static str, t: DataType) -> ScalarUDF {
    ScalarUDF::new_from_impl(NullOf {
        name,
        t,
        signature: Signature::variadic_any(Volatility::Stable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct NullOf {
    name: &'static str,
    t: DataType,
    signature: Signature,
}

impl ScalarUDFImpl for NullOf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.t.clone())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from(&self.t)?))
    }
}

/// PostgreSQL's rendering of a size in bytes.
fn pretty_size(bytes: i64) -> String {
    const LIMIT: i64 = 10 * 1024;
    let half_rounded = |x: i64| (x + if x < 0 { -1 } else { 1 }) / 2;
    if bytes.abs() < LIMIT {
        return format!("{bytes} bytes");
    }
    // In half units, rounded at the end, as PostgreSQL does.
    let mut size = bytes >> 9;
    for unit in ["kB", "MB", "GB", "TB"] {
        if size.abs() < LIMIT * 2 - 1 {
            return format!("{} {unit}", half_rounded(size));
        }
        size >>= 10;
    }
    format!("{} PB", half_rounded(size))
}

/// `pg_size_pretty(bytes)`.
fn size_pretty() -> ScalarUDF {
    create_udf(
        "pg_size_pretty",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let [arg] = args else {
                return exec_err!("pg_size_pretty takes one argument");
            };
            let sizes = arg.to_array(1)?;
            let sizes = datafusion::common::cast::as_int64_array(&sizes)?;
            let out: StringArray = sizes.iter().map(|s| s.map(pretty_size)).collect();
            shaped(matches!(arg, ColumnarValue::Scalar(_)), Arc::new(out))
        }),
    )
}

/// A function of one argument of any type that is true where it is not
/// null.
#[derive(Debug, PartialEq, Eq, Hash)]
struct AnyArgument {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for AnyArgument {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("{} takes one argument", self.name);
        };
        let array = arg.to_array(args.number_rows)?;
        let is_set = datafusion::arrow::compute::is_not_null(&array)?;
        Ok(ColumnarValue::Array(Arc::new(is_set)))
    }
}

/// `json_build_object(k1, v1, …)`: see the module's docs.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct JsonBuildObject {
    signature: Signature,
}

impl JsonBuildObject {
    /// The function.
    pub fn new() -> JsonBuildObject {
        JsonBuildObject {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl Default for JsonBuildObject {
    fn default() -> Self {
        JsonBuildObject::new()
    }
}

/// A value as JSON: numbers, booleans and nulls as themselves, anything
/// else as its text.
fn json_value(v: &ScalarValue) -> serde_json::Value {
    use serde_json::Value;
    if v.is_null() {
        return Value::Null;
    }
    match v {
        ScalarValue::Boolean(Some(b)) => Value::Bool(*b),
        ScalarValue::Int8(Some(_))
        | ScalarValue::Int16(Some(_))
        | ScalarValue::Int32(Some(_))
        | ScalarValue::Int64(Some(_))
        | ScalarValue::UInt8(Some(_))
        | ScalarValue::UInt16(Some(_))
        | ScalarValue::UInt32(Some(_))
        | ScalarValue::UInt64(Some(_))
        | ScalarValue::Float32(Some(_))
        | ScalarValue::Float64(Some(_)) => {
            serde_json::from_str(&v.to_string()).unwrap_or_else(|_| Value::String(v.to_string()))
        }
        _ => Value::String(v.to_string()),
    }
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if !args.args.len().is_multiple_of(2) {
            return exec_err!("json_build_object takes keys and values in pairs");
        }
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(args.number_rows))
            .collect::<Result<Vec<_>>>()?;
        let mut out = StringBuilder::new();
        for row in 0..args.number_rows {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                if key.is_null() {
                    return exec_err!("json_build_object: a key is null");
                }
                let value = ScalarValue::try_from_array(&pair[1], row)?;
                let key = match key {
                    ScalarValue::Utf8(Some(k))
                    | ScalarValue::LargeUtf8(Some(k))
                    | ScalarValue::Utf8View(Some(k)) => k,
                    other => other.to_string(),
                };
                object.insert(key, json_value(&value));
            }
            out.append_value(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `pg_text_array(v)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PgTextArray {
    signature: Signature,
}

impl PgTextArray {
    /// The function.
    pub fn new() -> PgTextArray {
        PgTextArray {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl Default for PgTextArray {
    fn default() -> Self {
        PgTextArray::new()
    }
}

fn text_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

impl ScalarUDFImpl for PgTextArray {
    fn name(&self) -> &str {
        "pg_text_array"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [t @ (DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..))] => {
                Ok(t.clone())
            }
            [DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null] => {
                Ok(text_list())
            }
            other => plan_err!("pg_text_array takes an array or its text form, not {other:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("pg_text_array takes one argument");
        };
        let array = arg.to_array(args.number_rows)?;
        if matches!(
            array.data_type(),
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..)
        ) {
            return Ok(ColumnarValue::Array(array));
        }
        let text = datafusion::arrow::compute::cast(&array, &DataType::Utf8)?;
        let text = as_string_array(&text)?;
        let mut out = ListBuilder::new(StringBuilder::new());
        for value in text.iter() {
            match value.and_then(parse_text_array) {
                Some(items) => {
                    for item in items {
                        out.values().append_option(item);
                    }
                    out.append(true);
                }
                None => out.append(false),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
    }
}

/// The elements of `{a,b,"c d",NULL}`; `None` when it is not that form.
fn parse_text_array(text: &str) -> Option<Vec<Option<String>>> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut items = Vec::new();
    if inner.trim().is_empty() {
        return Some(items);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut item = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => item.push(chars.next()?),
                    '"' => break,
                    c => item.push(c),
                }
            }
            while chars.peek().is_some_and(|c| *c != ',') {
                chars.next();
            }
        } else {
            while let Some(c) = chars.peek().copied().filter(|c| *c != ',') {
                item.push(c);
                chars.next();
            }
            item = item.trim().to_owned();
        }
        items.push((quoted || !item.eq_ignore_ascii_case("null")).then_some(item));
        match chars.next() {
            Some(',') => continue,
            None => return Some(items),
            Some(_) => return None,
        }
    }
}

/// A session's PostgreSQL settings, as `SET` leaves them.
pub type Settings = Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>;

/// `current_setting(name [, missing_ok])`: the session's value of a
/// setting, as `SHOW` gives it (SQLAlchemy asks for
/// `default_table_access_method`); an unknown one is an error, or NULL
/// when `missing_ok` is true.
pub fn current_setting(settings: Settings) -> ScalarUDF {
    ScalarUDF::new_from_impl(CurrentSetting {
        settings,
        signature: Signature::variadic_any(Volatility::Stable),
    })
}

#[derive(Debug)]
struct CurrentSetting {
    settings: Settings,
    signature: Signature,
}

impl PartialEq for CurrentSetting {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.settings, &other.settings)
    }
}

impl Eq for CurrentSetting {}

impl std::hash::Hash for CurrentSetting {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "current_setting".hash(state)
    }
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let missing_ok = matches!(
            args.args.get(1),
            Some(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))
        );
        let rows = args.number_rows;
        let Some(name) = args.args.first() else {
            return plan_err!("current_setting takes a setting's name");
        };
        let names = name.to_array(rows)?;
        let names = datafusion::arrow::compute::cast(&names, &DataType::Utf8)?;
        let names = as_string_array(&names)?;
        let settings = self
            .settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::with_capacity(names.len());
        for name in names.iter() {
            out.push(match name {
                None => None,
                Some(n) => match settings.get(&crate::settings::setting_name(n)) {
                    Some(v) => Some(v.clone()),
                    None if missing_ok => None,
                    None => {
                        return exec_err!("unrecognized configuration parameter \"{n}\"");
                    }
                },
            });
        }
        let array = StringArray::from(out);
        Ok(match name {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(array)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Option<Vec<Option<&'static str>>> {
        parse_text_array(text).map(|v| {
            v.into_iter()
                .map(|i| i.map(|s| &*Box::leak(s.into_boxed_str())))
                .collect()
        })
    }

    #[test]
    fn sizes_are_rendered_as_postgresql_renders_them() {
        assert_eq!(pretty_size(8192), "8192 bytes");
        assert_eq!(pretty_size(10 * 1024), "10 kB");
        assert_eq!(pretty_size(16 * 1024 + 100), "16 kB");
        assert_eq!(pretty_size(10 * 1024 * 1024), "10 MB");
        assert_eq!(pretty_size(123_456_789_012), "115 GB");
    }

    #[test]
    fn like_patterns_take_backslash_escapes() {
        assert_eq!(backslash_escapes("pg/_%", '/'), "pg\\_%");
        assert_eq!(backslash_escapes("a\\b//c", '/'), "a\\\\b\\/c");
    }

    #[test]
    fn types_are_found_by_their_names_and_aliases() {
        let oid = |n: &str| type_oids().get(&type_name(n)).copied();
        assert_eq!(oid("int4"), Some(23));
        assert_eq!(oid("integer"), Some(23));
        assert_eq!(oid("pg_catalog.varchar"), Some(1043));
        assert_eq!(oid("character varying"), Some(1043));
        assert_eq!(oid("int4[]"), Some(1007));
        assert_eq!(oid("hstore"), None);
    }

    #[test]
    fn json_objects_are_built_from_pairs() {
        let f = JsonBuildObject::new();
        let text = |v: &str| ColumnarValue::Scalar(ScalarValue::Utf8(Some(v.to_owned())));
        let args = vec![
            text("a"),
            ColumnarValue::Scalar(ScalarValue::Int64(Some(1))),
            text("b"),
            ColumnarValue::Scalar(ScalarValue::Boolean(None)),
            text("c"),
            text("x\"y"),
        ];
        let out = f
            .invoke_with_args(ScalarFunctionArgs {
                arg_fields: args
                    .iter()
                    .map(|a| Arc::new(Field::new("a", a.data_type(), true)))
                    .collect(),
                args,
                number_rows: 1,
                return_field: Arc::new(Field::new("r", DataType::Utf8, true)),
                config_options: Arc::new(Default::default()),
            })
            .unwrap()
            .to_array(1)
            .unwrap();
        let out = as_string_array(&out).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(out.value(0)).unwrap();
        assert_eq!(parsed, serde_json::json!({"a": 1, "b": null, "c": "x\"y"}));
    }

    #[test]
    fn postgresql_text_arrays_are_read() {
        assert_eq!(parsed("{}"), Some(vec![]));
        assert_eq!(parsed("{0}"), Some(vec![Some("0")]));
        assert_eq!(
            parsed(r#"{a, "b c",NULL,"NULL","q\"x"}"#),
            Some(vec![
                Some("a"),
                Some("b c"),
                None,
                Some("NULL"),
                Some("q\"x")
            ])
        );
        assert_eq!(parsed("not an array"), None);
        assert_eq!(parsed(r#"{"open}"#), None);
    }
}
