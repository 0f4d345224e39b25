//! Functions the gateway adds to every session: what PostgreSQL clients
//! call that DataFusion and `pg_catalog` lack.
//!
//! * `version()`: `PostgreSQL 14.0 (Strata …)`, as clients parse it.
//! * `pg_relation_is_publishable(rel)`: true for every relation (all are
//!   ordinary tables); takes the oid as a number or as the untyped literal
//!   psql gives (`'16455'`).
//! * `pg_text_array(v)`: an array given in PostgreSQL's text form
//!   (`{a,b,"c d",NULL}`) as a list of strings; a list passes through.
//!   `pg_catalog`'s array columns (`pg_policy.polroles`, …) hold that text
//!   form, and [`crate::rewrite`] reads the right side of `= ANY(…)` through
//!   it, so `oid = ANY(polroles)` plans whichever form the column has.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, ListBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::cast::as_string_array;
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};

use crate::session::version_string;

/// The functions, to register in a session.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        version(),
        relation_is_publishable(),
        ScalarUDF::new_from_impl(PgTextArray::new()),
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

/// `pg_relation_is_publishable(rel)`.
fn relation_is_publishable() -> ScalarUDF {
    ScalarUDF::new_from_impl(AnyArgument {
        name: "pg_relation_is_publishable",
        signature: Signature::any(1, Volatility::Stable),
    })
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
