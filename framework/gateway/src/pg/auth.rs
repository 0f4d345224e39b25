//! Who may connect: a connection's startup.
//!
//! With a token configured, clients authenticate by SCRAM-SHA-256 with the
//! token as their password (any user name, until principals exist). With
//! none, the gateway listens on loopback only and trusts every client.
//! Past `max_connections`, a startup is refused with PostgreSQL's
//! `too_many_connections` (53300); cancel requests still get through.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{SCRAM_ITERATIONS, ScramAuth, gen_salted_password};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, ServerParameterProvider,
    StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, ConnectionGuard, ConnectionHandle, ConnectionManager, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::settings::PG_VERSION;

/// The parameters a client is told at startup (`server_version` first:
/// clients choose their catalog queries by it).
pub struct ServerParams(DefaultServerParameterProvider);

impl ServerParams {
    /// Strata's.
    pub fn new() -> ServerParams {
        let mut p = DefaultServerParameterProvider::default();
        p.server_version = PG_VERSION.to_owned();
        ServerParams(p)
    }
}

impl Default for ServerParams {
    fn default() -> Self {
        ServerParams::new()
    }
}

impl ServerParameterProvider for ServerParams {
    fn server_parameters<C>(&self, client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        self.0.server_parameters(client)
    }
}

/// The cluster's token as a SCRAM secret: salted once, at start.
#[derive(Debug)]
pub struct TokenSecret {
    salt: Vec<u8>,
    salted: Vec<u8>,
}

impl TokenSecret {
    /// The secret of `token`.
    pub fn new(token: &str) -> TokenSecret {
        let salt: [u8; 16] = rand::random();
        TokenSecret {
            salted: gen_salted_password(token, &salt, SCRAM_ITERATIONS),
            salt: salt.to_vec(),
        }
    }
}

#[async_trait]
impl AuthSource for TokenSecret {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        Ok(Password::new(Some(self.salt.clone()), self.salted.clone()))
    }
}

/// A connection's startup.
pub struct Startup {
    /// The one database there is (clients naming another are refused with
    /// 3D000, as PostgreSQL refuses them).
    database: String,
    method: Method,
}

/// How a connection is let in.
pub enum Method {
    /// No token: every client is trusted (loopback only).
    Trust {
        /// Where its cancel key is registered.
        cancels: Arc<ConnectionManager>,
        /// The gateway's backend ids.
        pids: Arc<RandomPidSecretKeyGenerator>,
        /// Its parameters.
        params: Arc<ServerParams>,
    },
    /// SCRAM-SHA-256 with the token.
    Scram(Box<SASLAuthStartupHandler<ServerParams>>),
    /// Over the connection limit: refused.
    Full,
}

impl Startup {
    /// The startup of a connection to `database`: `secret` when a token is
    /// configured, `admitted` false past the connection limit.
    pub fn new(
        database: &str,
        secret: Option<Arc<TokenSecret>>,
        cancels: Arc<ConnectionManager>,
        pids: Arc<RandomPidSecretKeyGenerator>,
        admitted: bool,
    ) -> Startup {
        let params = Arc::new(ServerParams::new());
        let method = match (admitted, secret) {
            (false, _) => Method::Full,
            (true, None) => Method::Trust {
                cancels,
                pids,
                params,
            },
            (true, Some(secret)) => Method::Scram(Box::new(
                SASLAuthStartupHandler::new(params)
                    .with_scram(ScramAuth::new(secret))
                    .with_pid_secret_key_generator(pids)
                    .with_connection_manager(cancels),
            )),
        };
        Startup {
            database: database.to_owned(),
            method,
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // The database defaults to the user's name, as in PostgreSQL.
        if let PgWireFrontendMessage::Startup(ref startup) = message
            && !matches!(self.method, Method::Full)
        {
            let named = startup
                .parameters
                .get("database")
                .or_else(|| startup.parameters.get("user"));
            if let Some(db) = named
                && *db != self.database
            {
                return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "FATAL".to_owned(),
                    "3D000".to_owned(),
                    format!(
                        "database \"{db}\" does not exist (this gateway serves \"{}\")",
                        self.database
                    ),
                ))));
            }
        }
        match &self.method {
            Method::Scram(h) => h.on_startup(client, message).await,
            Method::Full => Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".to_owned(),
                "53300".to_owned(),
                "sorry, too many clients already".to_owned(),
            )))),
            Method::Trust {
                cancels,
                pids,
                params,
            } => {
                let PgWireFrontendMessage::Startup(ref startup) = message else {
                    return Ok(());
                };
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let (pid, key) = pids.generate(client);
                client.set_pid_and_secret_key(pid, key.clone());
                let (handle, guard) = cancels.register(pid, key);
                client
                    .session_extensions()
                    .insert::<Arc<ConnectionHandle>>(handle);
                client.session_extensions().insert::<ConnectionGuard>(guard);
                finish_authentication(client, params.as_ref()).await
            }
        }
    }
}
