//! Flight SQL's commands over the gateway's sessions.
//!
//! A query is planned when its `FlightInfo` is asked for (which gives its
//! schema) and runs when its ticket is fetched (`DoGet`); dropping that
//! call (the client cancels, or goes away) drops the wait for its job,
//! which cancels the job on the executors, as a PostgreSQL cancel does. A
//! statement that returns no rows (DDL, `INSERT`, `SET`) runs when its
//! `FlightInfo` is asked for, or through `DoPut` as an update.
//!
//! Prepared statements keep their session, plan and bound parameters
//! under a handle until closed; a batch of parameters runs the statement
//! once per row.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandPreparedStatementQuery, CommandPreparedStatementUpdate,
    CommandStatementIngest, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, SqlSupportedTransaction,
    TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::common::{ParamValues, ScalarValue};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::auth::FlightSession;
use super::metadata;
use crate::rows::RowStream;
use crate::session::{GatewaySession, Outcome, Planned};

/// How long a query's ticket waits to be fetched.
const TICKET_TTL: Duration = Duration::from_secs(600);

/// A statement between its plan and its run.
#[derive(Clone)]
struct Statement {
    session: Arc<GatewaySession>,
    sql: String,
    planned: Planned,
    /// Bound parameters (prepared statements): one run per row.
    params: Option<RecordBatch>,
    made: Instant,
}

/// The gateway's Flight SQL service.
pub struct FlightSql {
    /// Queries planned, waiting for their ticket to be fetched.
    tickets: Mutex<HashMap<String, Statement>>,
    /// Prepared statements, by handle.
    prepared: Mutex<HashMap<String, Statement>>,
}

impl Default for FlightSql {
    fn default() -> Self {
        FlightSql::new()
    }
}

impl FlightSql {
    /// A service with no statements yet.
    pub fn new() -> FlightSql {
        FlightSql {
            tickets: Mutex::new(HashMap::new()),
            prepared: Mutex::new(HashMap::new()),
        }
    }

    /// Plans the one statement of `sql` in `session`.
    async fn plan(session: &Arc<GatewaySession>, sql: &str) -> Result<Statement, Status> {
        let mut statements = session.parse(sql)?;
        if statements.len() != 1 {
            return Err(Status::invalid_argument(format!(
                "a Flight SQL statement is one SQL statement; this has {}",
                statements.len()
            )));
        }
        let statement = statements.remove(0);
        let planned = session.plan(&statement).await?;
        Ok(Statement {
            session: session.clone(),
            sql: sql.to_owned(),
            planned,
            params: None,
            made: Instant::now(),
        })
    }

    fn keep_ticket(&self, statement: Statement) -> String {
        let handle = new_handle();
        let mut tickets = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        tickets.retain(|_, s| s.made.elapsed() < TICKET_TTL);
        tickets.insert(handle.clone(), statement);
        handle
    }

    fn take_ticket(&self, handle: &[u8]) -> Result<Statement, Status> {
        let handle = std::str::from_utf8(handle).unwrap_or_default();
        self.tickets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(handle)
            .ok_or_else(|| {
                Status::not_found("no such query ticket (each is fetched once, within ten minutes)")
            })
    }

    /// A copy of a prepared statement to run (the map is not held
    /// meanwhile).
    fn prepared(&self, handle: &[u8]) -> Result<Statement, Status> {
        let handle = std::str::from_utf8(handle).unwrap_or_default();
        self.prepared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(handle)
            .cloned()
            .ok_or_else(|| Status::not_found("no such prepared statement (closed?)"))
    }
}

fn new_handle() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn session_of<T>(request: &Request<T>) -> Result<Arc<GatewaySession>, Status> {
    request
        .extensions()
        .get::<FlightSession>()
        .map(|s| s.0.clone())
        .ok_or_else(|| Status::internal("a call reached the service without a session"))
}

/// The Arrow IPC form of a schema, as Flight SQL's messages carry it.
fn ipc_schema(schema: &Schema) -> Result<Vec<u8>, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(message.0.to_vec())
}

/// A `FlightInfo` whose one endpoint's ticket is `ticket`.
fn flight_info(
    schema: &Schema,
    ticket: Ticket,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// The `FlightInfo` of a statement that ran and returns no rows: no
/// endpoint, and how many rows it wrote.
fn no_rows_info(
    outcome: &Outcome,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(&Schema::empty())
        .map_err(|e| Status::internal(e.to_string()))?
        .with_total_records(written(outcome))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// A ticket holding a Flight SQL command.
fn command_ticket(command: &impl ProstMessageExt) -> Ticket {
    Ticket::new(command.as_any().encode_to_vec())
}

/// The schema results are sent in: the engine's string and binary views
/// as plain strings and binaries, which every Arrow client reads.
fn wire_schema(schema: &Schema) -> SchemaRef {
    let fields = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8View => Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8)),
            DataType::BinaryView => Arc::new(f.as_ref().clone().with_data_type(DataType::Binary)),
            _ => f.clone(),
        })
        .collect::<Vec<_>>();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A batch in the schema its `FlightInfo` announced (clients hold each
/// batch to it, nullability included).
fn to_wire(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, FlightError> {
    if batch.schema().as_ref() == schema.as_ref() {
        return Ok(batch);
    }
    if batch.num_columns() != schema.fields().len() {
        return Err(FlightError::ProtocolError(format!(
            "a result batch has {} columns, its schema {}",
            batch.num_columns(),
            schema.fields().len()
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| datafusion::arrow::compute::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Batches as a `DoGet` stream, in `schema` as [`wire_schema`] sends it.
fn stream_batches(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Response<<FlightSql as FlightService>::DoGetStream> {
    stream_rows(schema, RowStream::ready(batches))
}

/// Rows as a `DoGet` stream as they come (from the cluster: from the
/// query's final stage), in `schema` as [`wire_schema`] sends it.
fn stream_rows(
    schema: SchemaRef,
    rows: RowStream,
) -> Response<<FlightSql as FlightService>::DoGetStream> {
    let wire = wire_schema(&schema);
    let announced = wire.clone();
    let batches = rows.map(move |b| match b {
        Ok(b) => to_wire(b, &wire),
        Err(e) => Err(FlightError::Tonic(Box::new(Status::from(e)))),
    });
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(announced)
        .build(batches)
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

/// A statement's rows in the schema its plan announced.
fn rows_as_announced(
    planned: &Planned,
    outcome: Outcome,
) -> Response<<FlightSql as FlightService>::DoGetStream> {
    let announced = planned
        .result_schema()
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    match outcome {
        Outcome::Rows { rows, .. } => stream_rows(announced, rows),
        _ => stream_batches(announced, Vec::new()),
    }
}

/// Runs a statement once per row of its parameters (once without); its
/// rows, or how many it wrote.
async fn run(
    session: &GatewaySession,
    planned: &Planned,
    params: Option<&RecordBatch>,
    sql: &str,
) -> Result<Outcome, Status> {
    let Some(batch) = params.filter(|b| b.num_columns() > 0) else {
        return Ok(session.execute(planned, None, sql).await?);
    };
    let mut outcomes = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let values = batch
            .columns()
            .iter()
            .map(|c| ScalarValue::try_from_array(c, row).map(Into::into))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        outcomes.push(
            session
                .execute(planned, Some(ParamValues::List(values)), sql)
                .await?,
        );
    }
    Ok(merge(outcomes))
}

/// The outcomes of one statement run for several rows of parameters, as
/// one.
fn merge(outcomes: Vec<Outcome>) -> Outcome {
    let mut merged: Option<Outcome> = None;
    for o in outcomes {
        merged = Some(match (merged, o) {
            (None, o) => o,
            (Some(Outcome::Rows { schema, rows, tag }), Outcome::Rows { rows: more, .. }) => {
                Outcome::Rows {
                    schema,
                    rows: rows.chain(more),
                    tag,
                }
            }
            (Some(Outcome::Done(tag, a)), Outcome::Done(_, b)) => {
                Outcome::Done(tag, Some(a.unwrap_or(0) + b.unwrap_or(0)))
            }
            (Some(_), o) => o,
        });
    }
    merged.unwrap_or(Outcome::Done("SELECT", Some(0)))
}

/// How many rows a statement that returns none wrote (`-1`: not known).
fn written(outcome: &Outcome) -> i64 {
    match outcome {
        Outcome::Done(_, Some(n)) => *n as i64,
        _ => -1,
    }
}

/// How many rows an outcome wrote or returned (`-1`: not known).
async fn count(outcome: Outcome) -> Result<i64, Status> {
    Ok(match outcome {
        Outcome::Rows { rows, .. } => rows
            .collect()
            .await?
            .iter()
            .map(|b| b.num_rows() as i64)
            .sum(),
        Outcome::Done(_, Some(n)) => n as i64,
        _ => -1,
    })
}

/// Reads the record batches a `DoPut` carries (parameters, ingested rows).
async fn read_batches(stream: PeekableFlightDataStream) -> Result<Vec<RecordBatch>, Status> {
    let stream = stream.map_err(FlightError::from);
    FlightRecordBatchStream::new_from_flight_data(stream)
        .try_collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("cannot read the batches sent: {e}")))
}

/// Parameters as one batch (the client sends them as one or more).
fn one_batch(batches: Vec<RecordBatch>) -> Result<Option<RecordBatch>, Status> {
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    datafusion::arrow::compute::concat_batches(&first.schema(), &batches)
        .map(Some)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// What the server tells of itself (`GetSqlInfo`).
static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Strata");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, true);
    b.append(SqlInfo::SqlDdlTable, true);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlQuotedIdentifierCase, 3_i32);
    b.append(SqlInfo::SqlIdentifierCase, 2_i32);
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    // Built from constants of the right kinds: it cannot fail.
    #[allow(clippy::expect_used)]
    b.build().expect("the SqlInfo values are well formed")
});

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    /// The basic-auth handshake: the session layer checked the credentials
    /// and sends the session token in the response's headers; the body
    /// carries it too.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        session_of(&request)?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(reply)]))))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = session_of(&request)?;
        let statement = Self::plan(&session, &query.query).await?;
        let descriptor = request.into_inner();
        match statement.planned.result_schema() {
            Some(schema) => {
                let handle = self.keep_ticket(statement);
                let ticket = TicketStatementQuery {
                    statement_handle: handle.into_bytes().into(),
                };
                flight_info(&wire_schema(&schema), command_ticket(&ticket), descriptor)
            }
            // No rows (DDL, a write, SET): it runs now.
            None => {
                let outcome = run(&session, &statement.planned, None, &statement.sql).await?;
                no_rows_info(&outcome, descriptor)
            }
        }
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let s = self.take_ticket(&ticket.statement_handle)?;
        let outcome = run(&s.session, &s.planned, None, &s.sql).await?;
        Ok(rows_as_announced(&s.planned, outcome))
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let session = session_of(&request)?;
        let mut total = 0;
        for statement in session.parse(&command.query)? {
            let planned = session.plan(&statement).await?;
            let outcome = session.execute(&planned, None, &command.query).await?;
            total += count(outcome).await?.max(0);
        }
        Ok(total)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let session = session_of(&request)?;
        let statement = Self::plan(&session, &query.query).await?;
        let dataset = statement
            .planned
            .result_schema()
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        let parameters = Schema::new(
            statement
                .planned
                .parameter_types()?
                .into_iter()
                .enumerate()
                .map(|(i, t)| Field::new(format!("${}", i + 1), t.unwrap_or(DataType::Utf8), true))
                .collect::<Vec<_>>(),
        );
        let handle = new_handle();
        self.prepared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(handle.clone(), statement);
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: ipc_schema(&wire_schema(&dataset))?.into(),
            parameter_schema: ipc_schema(&parameters)?.into(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        let handle = String::from_utf8_lossy(&query.prepared_statement_handle).into_owned();
        self.prepared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&handle);
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let params = one_batch(read_batches(request.into_inner()).await?)?;
        let handle = String::from_utf8_lossy(&query.prepared_statement_handle).into_owned();
        let mut prepared = self.prepared.lock().unwrap_or_else(PoisonError::into_inner);
        let statement = prepared
            .get_mut(&handle)
            .ok_or_else(|| Status::not_found("no such prepared statement (closed?)"))?;
        statement.params = params;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let p = self.prepared(&query.prepared_statement_handle)?;
        let descriptor = request.into_inner();
        match p.planned.result_schema() {
            Some(schema) => flight_info(&wire_schema(&schema), command_ticket(&query), descriptor),
            // No rows (DDL, a write): it runs now, as a statement does.
            None => {
                let outcome = run(&p.session, &p.planned, p.params.as_ref(), &p.sql).await?;
                no_rows_info(&outcome, descriptor)
            }
        }
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let p = self.prepared(&query.prepared_statement_handle)?;
        let outcome = run(&p.session, &p.planned, p.params.as_ref(), &p.sql).await?;
        Ok(rows_as_announced(&p.planned, outcome))
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let p = self.prepared(&query.prepared_statement_handle)?;
        let sent = one_batch(read_batches(request.into_inner()).await?)?;
        let params = sent.or(p.params);
        let outcome = run(&p.session, &p.planned, params.as_ref(), &p.sql).await?;
        count(outcome).await
    }

    async fn do_put_statement_ingest(
        &self,
        command: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let session = session_of(&request)?;
        let batches = read_batches(request.into_inner()).await?;
        Ok(super::ingest::ingest(&session, &command, batches).await?)
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let info = FlightInfo::decode(query.info.as_ref())
            .map_err(|e| Status::invalid_argument(format!("malformed FlightInfo: {e}")))?;
        // Flight SQL's CancelResult (not exported by arrow-flight).
        const CANCELLED: i32 = 1;
        const NOT_CANCELLABLE: i32 = 3;
        let mut result = NOT_CANCELLABLE;
        for endpoint in info.endpoint {
            let Some(ticket) = endpoint.ticket else {
                continue;
            };
            let any = Any::decode(ticket.ticket.as_ref())
                .map_err(|e| Status::invalid_argument(format!("malformed ticket: {e}")))?;
            if let Ok(Some(t)) = any.unpack::<TicketStatementQuery>()
                && self.take_ticket(&t.statement_handle).is_ok()
            {
                result = CANCELLED;
            }
        }
        Ok(ActionCancelQueryResult { result })
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(
            SQL_INFO.schema().as_ref(),
            command_ticket(&query),
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let batch = query
            .into_builder(&SQL_INFO)
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(stream_batches(batch.schema(), vec![batch]))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        flight_info(&schema, command_ticket(&query), request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let batch = metadata::catalogs(session_of(&request)?.as_ref(), query)?;
        Ok(stream_batches(batch.schema(), vec![batch]))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        flight_info(&schema, command_ticket(&query), request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let batch = metadata::schemas(session_of(&request)?.as_ref(), query)?;
        Ok(stream_batches(batch.schema(), vec![batch]))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        flight_info(&schema, command_ticket(&query), request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let batch = metadata::tables(session_of(&request)?.as_ref(), query).await?;
        Ok(stream_batches(batch.schema(), vec![batch]))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        flight_info(&schema, command_ticket(&query), request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let batch = metadata::table_types(query)?;
        Ok(stream_batches(batch.schema(), vec![batch]))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    #[tokio::test]
    async fn runs_for_several_rows_add_up() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "n",
            datafusion::arrow::datatypes::DataType::Int64,
            false,
        )]));
        let batch = |v: i64| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![v]))]).unwrap()
        };
        let rows = merge(vec![
            Outcome::Rows {
                schema: schema.clone(),
                rows: RowStream::ready(vec![batch(1)]),
                tag: "SELECT",
            },
            Outcome::Rows {
                schema: schema.clone(),
                rows: RowStream::ready(vec![batch(2)]),
                tag: "SELECT",
            },
        ]);
        assert_eq!(count(rows).await.unwrap(), 2);
        let written = merge(vec![
            Outcome::Done("INSERT", Some(3)),
            Outcome::Done("INSERT", Some(4)),
        ]);
        assert_eq!(count(written).await.unwrap(), 7);
        assert_eq!(count(merge(Vec::new())).await.unwrap(), 0);
    }
}
