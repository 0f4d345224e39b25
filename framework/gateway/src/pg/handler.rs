//! The PostgreSQL protocol's query flows over a [`GatewaySession`]: the
//! simple protocol (a script of statements, text results) and the extended
//! one (Parse / Bind / Describe / Execute: bound parameters, prepared
//! statements, binary results).

use std::fmt::Debug;
use std::sync::{Arc, PoisonError};

use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{CopyResponse, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, METADATA_APPLICATION_NAME, METADATA_USER, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use tokio::sync::OnceCell;

use crate::Gateway;
use crate::copy::CopyIn;
use crate::session::{Command, GatewaySession, Outcome, Planned};

/// A connection's state: its session, opened at its first statement (it
/// needs the user the startup named).
pub struct ConnState {
    gateway: Arc<Gateway>,
    session: OnceCell<Arc<GatewaySession>>,
    /// A `COPY … FROM STDIN` under way and the data received so far.
    copy: std::sync::Mutex<Option<(CopyIn, Vec<u8>)>>,
}

impl ConnState {
    /// A connection to `gateway`.
    pub fn new(gateway: Arc<Gateway>) -> ConnState {
        ConnState {
            gateway,
            session: OnceCell::new(),
            copy: std::sync::Mutex::new(None),
        }
    }

    async fn session<C: ClientInfo>(&self, client: &C) -> PgWireResult<Arc<GatewaySession>> {
        let session = self
            .session
            .get_or_try_init(|| async {
                let meta = client.metadata();
                let user = meta.get(METADATA_USER).map_or("strata", String::as_str);
                let app = meta
                    .get(METADATA_APPLICATION_NAME)
                    .map_or("", String::as_str);
                let peer = client.socket_addr().to_string();
                let session = GatewaySession::open(&self.gateway, user, app, &peer)?;
                let (pid, _) = client.pid_and_secret_key();
                self.gateway.registry.bind_pid(pid, session.id());
                Ok::<_, PgWireError>(Arc::new(session))
            })
            .await?;
        Ok(session.clone())
    }
}

/// A statement prepared by the extended protocol.
#[derive(Clone, Debug)]
pub struct PreparedStatement {
    sql: String,
    planned: Planned,
    /// Parameter types the plan tells (`None`: the client's, or text).
    params: Vec<Option<DataType>>,
}

/// The query handlers of one connection.
pub struct Queries {
    conn: Arc<ConnState>,
    parser: Arc<Parser>,
}

impl Queries {
    /// Handlers over a connection's state.
    pub fn new(conn: Arc<ConnState>) -> Queries {
        Queries {
            parser: Arc::new(Parser { conn: conn.clone() }),
            conn,
        }
    }
}

/// The extended protocol's Parse: plans the statement once.
pub struct Parser {
    conn: Arc<ConnState>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = PreparedStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<PreparedStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let session = self.conn.session(client).await?;
        let mut statements = session.parse(sql)?;
        if statements.len() > 1 {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".to_owned(),
                "42601".to_owned(),
                "cannot insert multiple commands into a prepared statement".to_owned(),
            ))));
        }
        let Some(statement) = statements.pop() else {
            return Ok(None);
        };
        let planned = session.plan(&statement).await?;
        let params = planned.parameter_types()?;
        Ok(Some(PreparedStatement {
            sql: sql.to_owned(),
            planned,
            params,
        }))
    }

    fn get_parameter_types(&self, stmt: &PreparedStatement) -> PgWireResult<Vec<Type>> {
        stmt.params
            .iter()
            .map(|t| match t {
                Some(t) => into_pg_type(t),
                None => Ok(Type::UNKNOWN),
            })
            .collect()
    }

    fn get_result_schema(
        &self,
        stmt: &PreparedStatement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match stmt.planned.result_schema() {
            Some(schema) => {
                arrow_schema_to_pg_fields(&schema, format.unwrap_or(&Format::UnifiedText), None)
            }
            None => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.conn.session(client).await?;
        let statements = match session.parse(query) {
            Ok(s) => s,
            Err(e) => return Ok(vec![Response::Error(Box::new(e.to_error_info()))]),
        };
        let mut out = Vec::with_capacity(statements.len());
        for statement in statements {
            let result = match session.plan(&statement).await {
                Ok(Planned::Command(Command::CopyIn(copy))) => {
                    // The rows follow as CopyData; the statement ends at
                    // CopyDone ([`CopyHandler`]).
                    out.push(self.start_copy(&session, copy).await?);
                    break;
                }
                Ok(planned) => session.execute(&planned, None, query).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(outcome) => out.push(response(outcome, &Format::UnifiedText)?),
                Err(e) => {
                    // A script stops at its first error, as PostgreSQL's does.
                    out.push(Response::Error(Box::new(e.to_error_info())));
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = PreparedStatement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<PreparedStatement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = PreparedStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.conn.session(client).await?;
        let stmt = &portal.statement.statement;
        let params = if stmt.params.is_empty() {
            None
        } else {
            let types: Vec<Option<&DataType>> = stmt.params.iter().map(Option::as_ref).collect();
            Some(deserialize_parameters(portal, &types)?)
        };
        if let Planned::Command(Command::CopyIn(copy)) = &stmt.planned {
            return self.start_copy(&session, copy.clone()).await;
        }
        let outcome = session
            .execute(&stmt.planned, params, &stmt.sql)
            .await
            .map_err(wire_error)?;
        response(outcome, &portal.result_column_format)
    }
}

impl Queries {
    /// Starts a `COPY … FROM STDIN`: the response that asks for its rows.
    async fn start_copy(&self, session: &GatewaySession, copy: CopyIn) -> PgWireResult<Response> {
        let width = match session.copy_width(&copy).await {
            Ok(w) => w,
            Err(e) => return Ok(Response::Error(Box::new(e.to_error_info()))),
        };
        *self
            .conn
            .copy
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((copy, Vec::new()));
        Ok(Response::CopyIn(CopyResponse::new(
            0,
            width,
            futures::stream::empty(),
        )))
    }

    fn take_copy(&self) -> Option<(CopyIn, Vec<u8>)> {
        self.conn
            .copy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

#[async_trait]
impl CopyHandler for Queries {
    async fn on_copy_data<C>(&self, _client: &mut C, data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut copy = self
            .conn
            .copy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, buffer)) = copy.as_mut() {
            buffer.extend_from_slice(&data.data);
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some((copy, data)) = self.take_copy() else {
            return Ok(());
        };
        let session = self.conn.session(client).await?;
        let rows = session.copy_in(&copy, &data).await.map_err(wire_error)?;
        let tag = Tag::new("COPY").with_rows(rows as usize);
        client
            .send(PgWireBackendMessage::CommandComplete(tag.into()))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.take_copy();
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".to_owned(),
            "57014".to_owned(),
            format!("COPY from stdin failed: {}", fail.message),
        )))
    }
}

/// An outcome as the protocol's response, rows in `format`.
fn response(outcome: Outcome, format: &Format) -> PgWireResult<Response> {
    Ok(match outcome {
        Outcome::Rows { schema, rows, tag } => {
            let fields = Arc::new(arrow_schema_to_pg_fields(&schema, format, None)?);
            // Each batch is encoded as it comes from the cluster.
            let encode = fields.clone();
            let rows = rows.flat_map(move |batch| match batch {
                Ok(b) => futures::stream::iter(encode_recordbatch(encode.clone(), b)).left_stream(),
                Err(e) => futures::stream::iter([Err(wire_error(e))]).right_stream(),
            });
            let mut response = QueryResponse::new(fields, rows);
            response.set_command_tag(tag);
            Response::Query(response)
        }
        Outcome::Done("INSERT", rows) => {
            Response::Execution(Tag::new("INSERT").with_oid(0).with_rows(rows.unwrap_or(0)))
        }
        Outcome::Done(tag, Some(rows)) => Response::Execution(Tag::new(tag).with_rows(rows)),
        Outcome::Done(tag, None) => Response::Execution(Tag::new(tag)),
        Outcome::Begin => Response::TransactionStart(Tag::new("BEGIN")),
        Outcome::End(tag) => Response::TransactionEnd(Tag::new(tag)),
    })
}

/// A gateway error as the protocol's (outside the handlers' generic
/// bounds, which hide this conversion).
fn wire_error(e: crate::error::GatewayError) -> PgWireError {
    e.into()
}
