//! `strata sql`'s interactive shell, in the manner of psql and
//! datafusion-cli: statements end at `;` and may span lines, `\`-commands
//! list and describe tables, `\timing` times each statement, and history
//! is kept in `$STRATA_HOME/sql_history`. Against the SQL gateway (over
//! Flight SQL: its session keeps `SET`s and temporary views between
//! statements) or against a driver of its own. With standard input not a
//! terminal, it reads statements from it without prompts.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use futures::TryStreamExt;
use strata_framework::output::{self, Format};
use strata_framework::session::Session;
use strata_gateway::warehouse::Warehouse;
use tonic::transport::Channel;

/// Where the shell's statements run.
pub enum Backend {
    /// A driver in this process.
    Local {
        /// Its session.
        session: Session,
        /// The catalog kept across runs, if any.
        warehouse: Option<Box<Warehouse>>,
    },
    /// The SQL gateway, over Flight SQL.
    Gateway(Box<FlightSqlServiceClient<Channel>>),
}

impl Backend {
    /// The gateway's Flight SQL endpoint at `addr` (see [`connect`]).
    pub async fn gateway(addr: &str, token: Option<&str>) -> anyhow::Result<Backend> {
        Ok(Backend::Gateway(Box::new(connect(addr, token).await?)))
    }

    /// Runs a script (one or more statements), printing results.
    pub async fn run(&mut self, sql: &str, format: Format) -> anyhow::Result<()> {
        match self {
            Backend::Local { session, warehouse } => {
                super::sql::run_script(session, sql, format, false, warehouse.as_deref()).await
            }
            Backend::Gateway(client) => {
                let (statements, rest) = split_statements(sql);
                let rest = rest.trim();
                let tail = (!rest.is_empty()).then(|| rest.to_owned());
                for statement in statements.into_iter().chain(tail) {
                    let (schema, batches) = flight_query(client, &statement).await?;
                    if let Some(schema) = schema {
                        let mut out = std::io::stdout().lock();
                        output::write(&mut out, format, &schema.into(), &batches)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Connects to the gateway's Flight SQL endpoint (`host:port`) and opens
/// a session, with the cluster's token as the password when there is one.
pub(crate) async fn connect(
    addr: &str,
    token: Option<&str>,
) -> anyhow::Result<FlightSqlServiceClient<Channel>> {
    let url = if addr.contains("://") {
        addr.replacen("grpc://", "http://", 1)
    } else {
        format!("http://{addr}")
    };
    let channel = Channel::from_shared(url.clone())
        .with_context(|| format!("bad gateway address {addr:?}"))?
        .connect()
        .await
        .with_context(|| format!("cannot reach the gateway's Flight SQL at {url}"))?;
    let mut client = FlightSqlServiceClient::new(channel);
    // The handshake opens the session the statements share.
    client
        .handshake("strata", token.unwrap_or_default())
        .await
        .context("the gateway refused the handshake")?;
    Ok(client)
}

/// Runs one statement over Flight SQL; its columns (none for a statement
/// that returns no rows) and rows.
pub(crate) async fn flight_query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> anyhow::Result<(Option<Schema>, Vec<RecordBatch>)> {
    let info = client
        .execute(sql.to_owned(), None)
        .await
        .map_err(|e| anyhow::anyhow!("{}", flight_message(&e.to_string())))?;
    if info.endpoint.is_empty() {
        return Ok((None, Vec::new()));
    }
    let schema = info.clone().try_decode_schema()?;
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let Some(ticket) = endpoint.ticket else {
            continue;
        };
        let stream = client
            .do_get(ticket)
            .await
            .map_err(|e| anyhow::anyhow!("{}", flight_message(&e.to_string())))?;
        let got: Vec<RecordBatch> = stream
            .try_collect()
            .await
            .map_err(|e| anyhow::anyhow!("{}", flight_message(&e.to_string())))?;
        batches.extend(got);
    }
    Ok((Some(schema), batches))
}

/// The server's message out of a Flight client error's wrapping.
fn flight_message(e: &str) -> String {
    let Some(i) = e.find("message: \"") else {
        return e.to_owned();
    };
    let rest = &e[i + "message: \"".len()..];
    // Up to the first quote not escaped.
    let bytes = rest.as_bytes();
    let end = (0..bytes.len())
        .find(|&j| bytes[j] == b'"' && (j == 0 || bytes[j - 1] != b'\\'))
        .unwrap_or(rest.len());
    rest[..end].replace("\\\"", "\"")
}

/// Splits `buf` into the statements it ends with `;` (outside quotes and
/// comments) and what follows the last of them.
pub fn split_statements(buf: &str) -> (Vec<String>, String) {
    #[derive(PartialEq)]
    enum In {
        Code,
        Single,
        Double,
        Line,
        Block,
    }
    let mut state = In::Code;
    let mut statements = Vec::new();
    let mut start = 0;
    let bytes = buf.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        match state {
            In::Code => match c {
                b'\'' => state = In::Single,
                b'"' => state = In::Double,
                b'-' if next == Some(b'-') => state = In::Line,
                b'/' if next == Some(b'*') => state = In::Block,
                b';' => {
                    let s = buf[start..i].trim();
                    if !s.is_empty() {
                        statements.push(s.to_owned());
                    }
                    start = i + 1;
                }
                _ => {}
            },
            In::Single if c == b'\'' => state = In::Code,
            In::Double if c == b'"' => state = In::Code,
            In::Line if c == b'\n' => state = In::Code,
            In::Block if c == b'*' && next == Some(b'/') => {
                state = In::Code;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    (statements, buf[start..].to_owned())
}

/// A `\`-command: what it does.
#[derive(Debug, PartialEq)]
enum Meta {
    Quit,
    Help,
    Timing(Option<bool>),
    /// SQL that answers it.
    Sql(String),
    Unknown(String),
}

/// Reads a `\`-command.
fn meta(line: &str) -> Meta {
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or_default();
    let arg = words.next();
    let listing = "SELECT table_schema AS schema, table_name AS name, table_type AS type \
                   FROM information_schema.tables \
                   WHERE table_schema NOT IN ('information_schema', 'pg_catalog')";
    match (command, arg) {
        ("\\q" | "\\quit", _) => Meta::Quit,
        ("\\?" | "\\h" | "\\help", _) => Meta::Help,
        ("\\timing", None) => Meta::Timing(None),
        ("\\timing", Some("on")) => Meta::Timing(Some(true)),
        ("\\timing", Some("off")) => Meta::Timing(Some(false)),
        ("\\d" | "\\dt", None) => Meta::Sql(format!("{listing} ORDER BY 1, 2")),
        ("\\dv", None) => Meta::Sql(format!("{listing} AND table_type = 'VIEW' ORDER BY 1, 2")),
        ("\\dn", None) => Meta::Sql(
            "SELECT DISTINCT table_schema AS schema FROM information_schema.tables \
             WHERE table_schema NOT IN ('information_schema', 'pg_catalog') ORDER BY 1"
                .to_owned(),
        ),
        ("\\d", Some(name)) => {
            let quoted = |s: &str| format!("'{}'", s.replace('\'', "''"));
            let filter = match name.rsplit_once('.') {
                Some((schema, table)) => format!(
                    "table_schema = {} AND table_name = {}",
                    quoted(schema),
                    quoted(table)
                ),
                None => format!("table_name = {}", quoted(name)),
            };
            Meta::Sql(format!(
                "SELECT column_name AS column, data_type AS type, is_nullable AS nullable \
                 FROM information_schema.columns WHERE {filter} ORDER BY ordinal_position"
            ))
        }
        _ => Meta::Unknown(line.to_owned()),
    }
}

const HELP: &str = "\
statements end with ';' and may span lines
  \\d            list tables and views      \\d NAME   describe a table's columns
  \\dt, \\dv      tables and views, views    \\dn       schemas
  \\timing [on|off]  time each statement    \\q        quit";

/// The shell: reads statements and `\`-commands until end of input or
/// `\q`. Exits non-zero when reading a script whose statements failed.
pub async fn run(mut backend: Backend, format: Format, label: &str) -> anyhow::Result<ExitCode> {
    let interactive = std::io::stdin().is_terminal();
    let mut lines = Lines::new(interactive)?;
    if interactive {
        println!("strata sql ({label}); \\? for help, \\q to quit");
    }
    let mut timing = false;
    let mut buffer = String::new();
    let mut failed = false;
    loop {
        let prompt = if buffer.trim().is_empty() {
            "strata=> "
        } else {
            "strata-> "
        };
        let Some(line) = lines.next(prompt)? else {
            break;
        };
        if buffer.trim().is_empty() && line.trim_start().starts_with('\\') {
            match meta(line.trim()) {
                Meta::Quit => break,
                Meta::Help => println!("{HELP}"),
                Meta::Timing(t) => {
                    timing = t.unwrap_or(!timing);
                    println!("Timing is {}.", if timing { "on" } else { "off" });
                }
                Meta::Sql(sql) => failed |= !run_one(&mut backend, &sql, format, timing).await,
                Meta::Unknown(c) => {
                    eprintln!("invalid command {c}; \\? for help");
                    failed = true;
                }
            }
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        let (statements, rest) = split_statements(&buffer);
        for statement in statements {
            failed |= !run_one(&mut backend, &statement, format, timing).await;
        }
        buffer = rest;
    }
    lines.save();
    // A statement left without its `;` at the end of a script runs too.
    if !buffer.trim().is_empty() && !interactive {
        failed |= !run_one(&mut backend, buffer.trim(), format, timing).await;
    }
    Ok(if failed && !interactive {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs one statement, printing its error; whether it succeeded.
async fn run_one(backend: &mut Backend, sql: &str, format: Format, timing: bool) -> bool {
    let started = Instant::now();
    let result = backend.run(sql, format).await;
    let ok = match result {
        Ok(()) => true,
        Err(e) => {
            eprintln!("error: {e:#}");
            false
        }
    };
    if timing {
        println!("Time: {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
    }
    std::io::stdout().flush().ok();
    ok
}

/// Lines of input: from the line editor (with history) on a terminal,
/// else from standard input.
enum Lines {
    Editor(Box<rustyline::DefaultEditor>, std::path::PathBuf),
    Stdin(std::io::StdinLock<'static>),
}

impl Lines {
    fn new(interactive: bool) -> anyhow::Result<Lines> {
        if !interactive {
            return Ok(Lines::Stdin(std::io::stdin().lock()));
        }
        let mut editor = rustyline::DefaultEditor::new()?;
        let history = crate::discovery::strata_home().join("sql_history");
        editor.load_history(&history).ok();
        Ok(Lines::Editor(Box::new(editor), history))
    }

    /// The next line; `None` at the end of input.
    fn next(&mut self, prompt: &str) -> anyhow::Result<Option<String>> {
        match self {
            Lines::Stdin(stdin) => {
                let mut line = String::new();
                Ok((stdin.read_line(&mut line)? > 0).then(|| line.trim_end().to_owned()))
            }
            Lines::Editor(editor, _) => {
                use rustyline::error::ReadlineError;
                match tokio::task::block_in_place(|| editor.readline(prompt)) {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            editor.add_history_entry(line.as_str()).ok();
                        }
                        Ok(Some(line))
                    }
                    // Ctrl-C drops the line being typed; Ctrl-D ends.
                    Err(ReadlineError::Interrupted) => Ok(Some(String::new())),
                    Err(ReadlineError::Eof) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    fn save(&mut self) {
        if let Lines::Editor(editor, history) = self {
            if let Some(dir) = history.parent() {
                std::fs::create_dir_all(dir).ok();
            }
            editor.save_history(history).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_end_at_semicolons_outside_quotes_and_comments() {
        let (done, rest) =
            split_statements("select 1; select ';' -- a ; here\n, \"a;b\"; /* ; */ sel");
        assert_eq!(done, vec!["select 1", "select ';' -- a ; here\n, \"a;b\""]);
        assert_eq!(rest.trim(), "/* ; */ sel");
        let (done, rest) = split_statements("select 'it''s;'\n;");
        assert_eq!(done, vec!["select 'it''s;'"]);
        assert!(rest.is_empty());
        let (done, _) = split_statements(";;  ;");
        assert!(done.is_empty());
    }

    #[test]
    fn backslash_commands_read_as_psql_reads_them() {
        assert_eq!(meta("\\q"), Meta::Quit);
        assert_eq!(meta("\\timing on"), Meta::Timing(Some(true)));
        assert_eq!(meta("\\timing"), Meta::Timing(None));
        let Meta::Sql(sql) = meta("\\d public.o'rders") else {
            panic!("\\d NAME is a query")
        };
        assert!(sql.contains("table_schema = 'public' AND table_name = 'o''rders'"));
        assert!(matches!(meta("\\dt"), Meta::Sql(s) if s.contains("information_schema.tables")));
        assert_eq!(meta("\\x"), Meta::Unknown("\\x".to_owned()));
    }

    #[test]
    fn flight_errors_read_as_the_servers_message() {
        let e = "Ipc error: Status { code: NotFound, message: \"table 'x' not found (SQLSTATE 42P01)\", details: [], metadata: {} }";
        assert_eq!(flight_message(e), "table 'x' not found (SQLSTATE 42P01)");
        assert_eq!(flight_message("plain"), "plain");
        let e = "Ipc error: Status { code: NotFound, message: \"no \\\"x\\\"\" }\"";
        assert_eq!(flight_message(e), "no \"x\"");
    }
}
