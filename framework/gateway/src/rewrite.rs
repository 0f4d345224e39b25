//! PostgreSQL syntax DataFusion does not plan, rewritten into forms it
//! does, before planning: general translations of the syntax, never
//! answers keyed on a query's text.
//!
//! * `ARRAY(SELECT e FROM … ORDER BY k)` (psql's `\d` uses it) is the
//!   scalar subquery `(SELECT array_agg(e ORDER BY k) FROM …)`.
//! * Expressions a select list repeats unnamed (`SELECT a, NULL, NULL`:
//!   PostgreSQL allows it, DataFusion wants unique names) are named
//!   `expr_2`, `expr_3`, … after the first.
//! * `LIKE p ESCAPE 'c'` with another escape than the backslash (SQLAlchemy
//!   sends `ESCAPE '/'`) is `LIKE pg_like_pattern(p, 'c')`, the pattern
//!   rewritten to backslash escapes, DataFusion's only escape.
//! * `array_to_string(a, …)` reads `a` through `pg_text_array` too.
//! * `x = ANY(a)` and `x op ALL(a)` read `a` through `pg_text_array`
//!   ([`crate::functions`]): an array, or one in PostgreSQL's text form as
//!   `pg_catalog` holds them.
//! * `t VERSION AS OF n` is the table `"t@n"` ([`version_as_of`]).

use std::convert::Infallible;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::sql::sqlparser::ast::visit_relations;
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, OrderByKind, Query, SelectItem,
    SetExpr, Statement, Value, VisitMut, VisitorMut, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::sql::rules::{self, SqlStatementRewriteRule};

/// Rewrites what this module translates, in place.
pub fn rewrite(statement: &mut Statement) {
    let ControlFlow::Continue(()) = statement.visit(&mut DistinctNames);
    let ControlFlow::Continue(()) = visit_expressions_mut(statement, |expr| {
        if let Some(rewritten) = array_of_subquery(expr) {
            *expr = rewritten;
        }
        if let Expr::Like {
            pattern,
            escape_char,
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char,
            ..
        } = expr
            && let Some(escape) = escape_char.as_ref().map(|e| e.value.to_string())
            && escape != "'\\'"
            && let Some(rewritten) = parse_expr(&format!("pg_like_pattern({pattern}, {escape})"))
        {
            **pattern = rewritten;
            *escape_char = None;
        }
        if let Expr::Function(f) = expr
            && f.name
                .0
                .last()
                .is_some_and(|p| p.to_string().eq_ignore_ascii_case("array_to_string"))
            && let FunctionArguments::List(list) = &mut f.args
            && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(first))) = list.args.first_mut()
            && !is_text_array_call(first)
            && let Some(wrapped) = parse_expr(&format!("pg_text_array({first})"))
        {
            *first = wrapped;
        }
        // `generate_subscripts(a, 1)`, a set-returning function DataFusion
        // lacks: the subscripts of a one-dimensional array, as a set.
        if let Expr::Function(f) = expr
            && f.name
                .0
                .last()
                .is_some_and(|p| p.to_string().eq_ignore_ascii_case("generate_subscripts"))
            && let FunctionArguments::List(list) = &f.args
            && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(array))) = list.args.first()
            && let Some(rewritten) = parse_expr(&format!(
                "unnest(range(1, CAST(cardinality({array}) AS BIGINT) + 1))"
            ))
        {
            *expr = rewritten;
        }
        if let Expr::AnyOp { right, .. } | Expr::AllOp { right, .. } = expr
            && !matches!(right.as_ref(), Expr::Subquery(_) | Expr::Array(_))
            && !is_text_array_call(right)
            && let Some(wrapped) = parse_expr(&format!("pg_text_array({right})"))
        {
            **right = wrapped;
        }
        ControlFlow::<Infallible>::Continue(())
    });
}

/// `ARRAY(subquery)` as a scalar subquery aggregating its one column.
fn array_of_subquery(expr: &Expr) -> Option<Expr> {
    let Expr::Function(f) = expr else {
        return None;
    };
    if f.name.0.len() != 1 || !f.name.to_string().eq_ignore_ascii_case("array") {
        return None;
    }
    let FunctionArguments::Subquery(query) = &f.args else {
        return None;
    };
    let mut query: Query = query.as_ref().clone();
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    let [item] = select.projection.as_mut_slice() else {
        return None;
    };
    let (element, alias) = match item {
        SelectItem::UnnamedExpr(e) => (e.clone(), None),
        SelectItem::ExprWithAlias { expr, alias } => (expr.clone(), Some(alias.clone())),
        _ => return None,
    };
    let order = match query.order_by.take() {
        None => String::new(),
        Some(o) => match o.kind {
            OrderByKind::Expressions(exprs) => {
                let keys: Vec<String> = exprs
                    .into_iter()
                    .map(|mut k| {
                        // `ORDER BY 1` names the (one) projected column.
                        if matches!(&k.expr, Expr::Value(v) if matches!(v.value, Value::Number(ref n, _) if n == "1"))
                        {
                            k.expr = element.clone();
                        }
                        k.to_string()
                    })
                    .collect();
                format!(" ORDER BY {}", keys.join(", "))
            }
            OrderByKind::All(_) => return None,
        },
    };
    let aggregate = parse_expr(&format!("array_agg({element}{order})"))?;
    *item = match alias {
        Some(alias) => SelectItem::ExprWithAlias {
            expr: aggregate,
            alias,
        },
        None => SelectItem::UnnamedExpr(aggregate),
    };
    Some(Expr::Subquery(Box::new(query)))
}

/// Names repeated unnamed select-list expressions apart.
struct DistinctNames;

impl VisitorMut for DistinctNames {
    type Break = Infallible;

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<Infallible> {
        name_apart(query.body.as_mut());
        ControlFlow::Continue(())
    }
}

fn name_apart(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            let mut seen: Vec<String> = Vec::new();
            for item in &mut select.projection {
                let SelectItem::UnnamedExpr(e) = item else {
                    continue;
                };
                if matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
                    continue;
                }
                let name = e.to_string();
                let n = seen.iter().filter(|s| **s == name).count();
                seen.push(name.clone());
                if n > 0 {
                    let alias = Ident::new(format!("{}_{}", alias_stem(&name), n + 1));
                    *item = SelectItem::ExprWithAlias {
                        expr: e.clone(),
                        alias,
                    };
                }
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            name_apart(left);
            name_apart(right);
        }
        _ => {}
    }
}

/// A readable stem of an expression's text for its alias.
fn alias_stem(text: &str) -> String {
    let stem: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    stem.trim_matches('_').to_owned()
}

fn parse_expr(sql: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .ok()?
        .parse_expr()
        .ok()
}

fn is_text_array_call(e: &Expr) -> bool {
    matches!(e, Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("pg_text_array"))
}

/// `datafusion-pg-catalog`'s syntax rewrites that translate (qualifying
/// `pg_catalog` names, `OPERATOR(pg_catalog.~)`, `COLLATE`, `::regclass`,
/// `= ANY(array)`…) — not the one that turns a correlated subquery of a
/// select list into NULL (applied to catalog queries only: over data it
/// would be a wrong answer where an error is due), nor the parser's table
/// of whole queries answered by substitution.
pub(crate) fn compatibility_rules() -> Vec<Arc<dyn SqlStatementRewriteRule>> {
    vec![
        Arc::new(rules::AliasDuplicatedProjectionRewrite),
        Arc::new(rules::ResolveUnqualifiedIdentifier),
        Arc::new(rules::RewriteArrayAnyAllOperation),
        Arc::new(rules::PrependUnqualifiedPgTableName),
        Arc::new(rules::StripCallableQualifier),
        Arc::new(rules::FixArrayLiteral),
        Arc::new(rules::CurrentUserVariableToSessionUserFunctionCall),
        Arc::new(rules::StripCollate),
        Arc::new(rules::RewritePgCatalogOperator),
        Arc::new(rules::RewriteRegCastToSubquery::new()),
        Arc::new(rules::FixVersionColumnName),
    ]
}

/// Whether every relation a statement names is a catalog table
/// (`pg_catalog.…`, `information_schema.…`, or an unqualified `pg_…`).
/// In a statement over the catalog only: the scalar subqueries nested in
/// its select list (inside `CASE`, a function's arguments) are NULL too,
/// as `datafusion-pg-catalog`'s rule makes the top-level ones: they ask
/// for column defaults, identities and sequences, which do not exist here
/// (SQLAlchemy's column reflection asks so).
pub(crate) fn null_nested_subqueries(statement: &mut Statement) {
    let Statement::Query(query) = statement else {
        return;
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    for item in &mut select.projection {
        let (SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) = item else {
            continue;
        };
        let ControlFlow::Continue(()) = visit_expressions_mut(e, |e| {
            if matches!(e, Expr::Subquery(_)) {
                *e = Expr::value(Value::Null);
            }
            ControlFlow::<Infallible>::Continue(())
        });
    }
}

/// In a statement over the catalog only: a scalar subquery of one plain
/// select item, not aggregated (`(SELECT c.relkind = 'c' FROM pg_class c
/// WHERE c.oid = t.typrelid)`, psql's `\dT`), selects `max` of it —
/// DataFusion plans a correlated scalar subquery only when aggregated,
/// and a lookup of the catalog by key finds at most the one row anyway.
pub(crate) fn aggregate_scalar_subqueries(statement: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{
        Function, FunctionArgumentList, FunctionArguments, GroupByExpr, ObjectName,
    };
    let ControlFlow::Continue(()) = visit_expressions_mut(statement, |e| {
        let Expr::Subquery(query) = e else {
            return ControlFlow::<Infallible>::Continue(());
        };
        let SetExpr::Select(select) = query.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        let plain_group = match &select.group_by {
            GroupByExpr::Expressions(exprs, _) => exprs.is_empty(),
            GroupByExpr::All(_) => false,
        };
        if !plain_group || select.distinct.is_some() || select.projection.len() != 1 {
            return ControlFlow::Continue(());
        }
        let (SelectItem::UnnamedExpr(item) | SelectItem::ExprWithAlias { expr: item, .. }) =
            &mut select.projection[0]
        else {
            return ControlFlow::Continue(());
        };
        if matches!(item, Expr::Function(_) | Expr::Subquery(_)) {
            return ControlFlow::Continue(());
        }
        let inner = std::mem::replace(item, Expr::value(Value::Null));
        *item = Expr::Function(Function {
            name: ObjectName::from(vec![Ident::new("max")]),
            uses_odbc_syntax: false,
            parameters: FunctionArguments::None,
            args: FunctionArguments::List(FunctionArgumentList {
                duplicate_treatment: None,
                args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(inner))],
                clauses: vec![],
            }),
            filter: None,
            null_treatment: None,
            over: None,
            within_group: vec![],
        });
        ControlFlow::Continue(())
    });
}

pub(crate) fn reads_only_the_catalog(statement: &Statement) -> bool {
    let mut only = true;
    let mut any = false;
    let ControlFlow::Continue(()) = visit_relations(statement, |name| {
        any = true;
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| p.to_string().to_lowercase())
            .collect();
        let catalog = match parts.as_slice() {
            [table] => table.starts_with("pg_"),
            [.., schema, _] => schema == "pg_catalog" || schema == "information_schema",
            [] => false,
        };
        only &= catalog;
        ControlFlow::<Infallible>::Continue(())
    });
    any && only
}

/// `t VERSION AS OF n` (Delta's and Databricks' time travel, which
/// PostgreSQL's grammar lacks) becomes the table name `"t@n"`, which the
/// session's catalog resolves to managed table `t` at version `n`
/// ([`crate::catalog`]). Statements without it are returned as they are.
pub fn version_as_of(sql: &str) -> std::borrow::Cow<'_, str> {
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Word};
    use std::borrow::Cow;
    if !sql.to_ascii_uppercase().contains("VERSION") {
        return Cow::Borrowed(sql);
    }
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return Cow::Borrowed(sql);
    };
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i], Token::Whitespace(_)))
        .collect();
    let is = |i: usize, kw: &str| matches!(&tokens[i], Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw));
    let mut out: Vec<Option<Token>> = tokens.iter().cloned().map(Some).collect();
    let mut changed = false;
    for w in significant.windows(5) {
        let &[name, version, as_, of, number] = w else {
            continue;
        };
        let (Token::Word(table), Token::Number(n, _)) = (&tokens[name], &tokens[number]) else {
            continue;
        };
        if !(is(version, "VERSION") && is(as_, "AS") && is(of, "OF")) || out[name].is_none() {
            continue;
        }
        let base = match table.quote_style {
            Some(_) => table.value.clone(),
            None => table.value.to_lowercase(),
        };
        out[name] = Some(Token::Word(Word {
            value: format!("{base}@{n}"),
            quote_style: Some('"'),
            keyword: Keyword::NoKeyword,
        }));
        for slot in &mut out[name + 1..=number] {
            *slot = None;
        }
        changed = true;
    }
    if !changed {
        return Cow::Borrowed(sql);
    }
    Cow::Owned(out.into_iter().flatten().map(|t| t.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_as_of_names_the_tables_version() {
        assert_eq!(
            version_as_of("SELECT * FROM sales.T VERSION AS OF 3 WHERE a = 'VERSION AS OF 4'"),
            "SELECT * FROM sales.\"t@3\" WHERE a = 'VERSION AS OF 4'"
        );
        assert_eq!(
            version_as_of("select 1 from \"Big\" version as of 12 join u on true"),
            "select 1 from \"Big@12\" join u on true"
        );
        let plain = "SELECT version()";
        assert!(matches!(
            version_as_of(plain),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn generate_subscripts_is_the_unnested_range_of_the_arrays_subscripts() {
        assert_eq!(
            rewritten("SELECT unnest(i.indkey), generate_subscripts(i.indkey, 1) FROM pg_index i"),
            "SELECT unnest(i.indkey), unnest(range(1, CAST(cardinality(i.indkey) AS BIGINT) + 1)) \
             FROM pg_index i"
        );
    }

    fn rewritten(sql: &str) -> String {
        let mut s = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        rewrite(&mut s);
        s.to_string()
    }

    #[test]
    fn nested_subqueries_of_a_catalog_select_list_are_null() {
        let mut s = Parser::parse_sql(
            &PostgreSqlDialect {},
            "SELECT a.attname, CASE WHEN a.atthasdef THEN (SELECT d.adbin FROM pg_attrdef d \
             WHERE d.adrelid = a.attrelid) ELSE NULL END AS dflt FROM pg_attribute a",
        )
        .unwrap()
        .remove(0);
        null_nested_subqueries(&mut s);
        assert_eq!(
            s.to_string(),
            "SELECT a.attname, CASE WHEN a.atthasdef THEN NULL ELSE NULL END AS dflt \
             FROM pg_attribute a"
        );
    }

    #[test]
    fn array_of_a_subquery_is_an_aggregating_subquery() {
        assert_eq!(
            rewritten("SELECT array(select rolname from pg_roles where oid = 1 order by 1) FROM t"),
            "SELECT (SELECT array_agg(rolname ORDER BY rolname) FROM pg_roles WHERE oid = 1) FROM t"
        );
        assert_eq!(
            rewritten("SELECT ARRAY(SELECT a AS x FROM u)"),
            "SELECT (SELECT array_agg(a) AS x FROM u)"
        );
        assert_eq!(
            rewritten("SELECT 1 WHERE oid = any (pol.polroles) AND 2 <> ALL(ARRAY[1])"),
            "SELECT 1 WHERE oid = ANY(pg_text_array(pol.polroles)) AND 2 <> ALL(ARRAY[1])"
        );
        assert_eq!(
            rewritten("SELECT a, NULL, NULL, b, b UNION SELECT x, NULL, NULL, y, z"),
            "SELECT a, NULL, NULL AS null_2, b, b UNION SELECT x, NULL, NULL AS null_2, y, z"
        );
        assert_eq!(
            rewritten("SELECT 1 WHERE n NOT LIKE $1 || '%' ESCAPE '/'"),
            "SELECT 1 WHERE n NOT LIKE pg_like_pattern($1 || '%', '/')"
        );
        assert_eq!(
            rewritten("SELECT 1 WHERE n LIKE 'a\\_%' ESCAPE '\\'"),
            "SELECT 1 WHERE n LIKE 'a\\_%' ESCAPE '\\'"
        );
        assert_eq!(
            rewritten("SELECT pg_catalog.array_to_string(n.nspacl, ',') FROM n"),
            "SELECT pg_catalog.array_to_string(pg_text_array(n.nspacl), ',') FROM n"
        );
        // Other uses of ARRAY are left alone.
        assert_eq!(rewritten("SELECT ARRAY[1, 2]"), "SELECT ARRAY[1, 2]");
        assert_eq!(
            rewritten("SELECT array(select a, b from u)"),
            "SELECT array(SELECT a, b FROM u)"
        );
    }

    #[test]
    fn catalog_queries_are_told_from_queries_over_data() {
        let parse = |sql: &str| {
            datafusion::sql::sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, sql)
                .unwrap()
                .remove(0)
        };
        assert!(reads_only_the_catalog(&parse(
            "SELECT a.attname FROM pg_catalog.pg_attribute a JOIN pg_type t ON true"
        )));
        assert!(reads_only_the_catalog(&parse(
            "SELECT * FROM information_schema.tables"
        )));
        assert!(!reads_only_the_catalog(&parse(
            "SELECT (SELECT 1 FROM pg_class c WHERE c.oid = t.x) FROM t"
        )));
        assert!(!reads_only_the_catalog(&parse("SELECT 1")));
    }
}
