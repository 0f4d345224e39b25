//! How to reach the manager and who the framework is: [`SchedulerConfig`]
//! and [`FrameworkConfig`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use strata_proto::ids::{FrameworkId, Role};
use strata_proto::pb;

use crate::dedup::DEFAULT_DEDUP_CAPACITY;
use crate::error::SdkError;
use crate::task::Ask;

/// The default failover timeout: a week, as Mesos recommends (its own
/// default of zero kills a framework's tasks on the first disconnection).
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The role a framework gets when it names none (Mesos's default role).
pub const DEFAULT_ROLE: &str = "*";

/// Who the framework is: the typed form of [`pb::FrameworkInfo`].
#[derive(Clone, Debug, PartialEq)]
pub struct FrameworkConfig {
    /// A human-readable name (required).
    pub name: String,
    /// The user tasks run as by default; empty: the agent's default.
    pub user: String,
    /// The role whose share the framework uses (default `*`).
    pub role: Role,
    /// The class of offers made while no demand is declared (default
    /// `batch`).
    pub default_class: String,
    /// How long the manager keeps the framework's tasks running after it
    /// disconnects, waiting for it to fail over (default: a week). The SDK
    /// stops re-subscribing once it has passed. Zero means the manager's
    /// default; the SDK then re-subscribes until refused.
    pub failover_timeout: Duration,
    /// The host the framework runs on.
    pub hostname: String,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// `None` to register a new framework; the id from an earlier
    /// [`Event::Subscribed`](crate::Event::Subscribed) to fail over to it.
    pub framework_id: Option<FrameworkId>,
}

impl FrameworkConfig {
    /// A new framework called `name`, with defaults: the current user, role
    /// `*`, class `batch`, a failover timeout of a week, this host's name.
    pub fn new(name: impl Into<String>) -> Self {
        FrameworkConfig {
            name: name.into(),
            user: std::env::var("USER").unwrap_or_default(),
            role: Role::new(DEFAULT_ROLE),
            default_class: strata_proto::class::DEFAULT_CLASS.to_owned(),
            failover_timeout: DEFAULT_FAILOVER_TIMEOUT,
            hostname: local_hostname(),
            labels: BTreeMap::new(),
            framework_id: None,
        }
    }

    /// Converts to the wire form, with `framework_id` as the id to use.
    pub(crate) fn to_proto(&self, framework_id: Option<&FrameworkId>) -> pb::FrameworkInfo {
        pb::FrameworkInfo {
            framework_id: framework_id
                .map(|id| id.as_str().to_owned())
                .unwrap_or_default(),
            name: self.name.clone(),
            user: self.user.clone(),
            role: self.role.as_str().to_owned(),
            default_class: self.default_class.clone(),
            failover_timeout_seconds: self.failover_timeout.as_secs_f64(),
            hostname: self.hostname.clone(),
            labels: self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            // Set by the manager from the credentials.
            principal: String::new(),
        }
    }
}

fn local_hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Everything [`Scheduler::subscribe`](crate::Scheduler::subscribe) needs.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// The manager's address, `host:port` (or a full `http://host:port`),
    /// or every manager of a highly available cluster, comma-separated: the
    /// SDK subscribes to the one that leads (a standby names it) and, after
    /// a failover, finds the new one.
    pub manager: String,
    /// The shared secret, sent as `authorization: Bearer <token>` on every
    /// request when set.
    pub token: Option<String>,
    /// Who the framework is.
    pub framework: FrameworkConfig,
    /// Start suppressed: no offers until [`revive`] or declared demand.
    ///
    /// [`revive`]: crate::SchedulerHandle::revive
    pub suppressed: bool,
    /// Demand known at subscription time.
    pub demand: Vec<Ask>,
    /// How long to wait to connect and to be subscribed (default 10 s).
    pub connect_timeout: Duration,
    /// How long to wait for the answer to each call (default 30 s).
    pub call_timeout: Duration,
    /// How long the first subscription waits for a leader while managers
    /// answer but none leads (an election under way after a leader died;
    /// default 30 s). With no manager answering at all it fails at once.
    pub leader_wait: Duration,
    /// Acknowledge each status update that carries a uuid as soon as it is
    /// handed to the event stream (default true). Turn it off to acknowledge
    /// with [`acknowledge`] only once an update has been acted on (for
    /// example, written durably).
    ///
    /// [`acknowledge`]: crate::SchedulerHandle::acknowledge
    pub auto_acknowledge: bool,
    /// On a lost stream, re-subscribe with the same framework id, with
    /// backoff, until the failover timeout would have passed (default
    /// true). Otherwise the event stream ends after
    /// [`Event::Disconnected`](crate::Event::Disconnected).
    pub reconnect: bool,
    /// How many status-update uuids are remembered to drop duplicates
    /// (default 100 000).
    pub dedup_capacity: usize,
    /// How the manager is reached: TCP to [`manager`](Self::manager) (the
    /// default), or a stream the connector makes.
    pub connector: Connector,
}

/// Makes one in-memory stream to a manager for each connection.
pub type StreamFactory = dyn Fn() -> tokio::io::DuplexStream + Send + Sync;

/// How the SDK reaches the manager: TCP (the default), or streams a
/// function makes (an in-memory pipe to a manager in the same process:
/// tests in paused time use it, since with real sockets the paused clock
/// would jump ahead while bytes are on their way).
#[derive(Clone, Default)]
pub struct Connector(Option<Arc<StreamFactory>>);

impl Connector {
    /// Connections are streams `make` returns, one per connection.
    pub fn in_memory(make: impl Fn() -> tokio::io::DuplexStream + Send + Sync + 'static) -> Self {
        Connector(Some(Arc::new(make)))
    }

    /// The stream maker, if connections are in memory.
    pub(crate) fn streams(&self) -> Option<Arc<StreamFactory>> {
        self.0.clone()
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "in-memory" } else { "tcp" })
    }
}

impl PartialEq for Connector {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl SchedulerConfig {
    /// A configuration with defaults for everything but the manager's
    /// address and the framework.
    pub fn new(manager: impl Into<String>, framework: FrameworkConfig) -> Self {
        SchedulerConfig {
            manager: manager.into(),
            token: None,
            framework,
            suppressed: false,
            demand: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            leader_wait: Duration::from_secs(30),
            auto_acknowledge: true,
            reconnect: true,
            dedup_capacity: DEFAULT_DEDUP_CAPACITY,
            connector: Connector::default(),
        }
    }

    /// Sets the token.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The URI the gRPC channel connects to (h2c).
    pub(crate) fn endpoint_uri(address: &str) -> String {
        let m = address.trim();
        if m.contains("://") {
            m.to_owned()
        } else {
            format!("http://{m}")
        }
    }

    /// Checks what can be checked before connecting.
    pub(crate) fn validate(&self) -> Result<(), SdkError> {
        let invalid = |message: &str| {
            Err(SdkError::InvalidConfig {
                message: message.to_owned(),
            })
        };
        if self.manager.trim().is_empty() {
            return invalid("the manager address is empty (expected host:port)");
        }
        if self.framework.name.trim().is_empty() {
            return invalid("the framework name is empty");
        }
        if self.framework.role.is_empty() {
            return invalid("the framework role is empty (use \"*\" for the default role)");
        }
        if self
            .framework
            .framework_id
            .as_ref()
            .is_some_and(FrameworkId::is_empty)
        {
            return invalid("framework_id is Some but empty: use None to register a new framework");
        }
        if self.connect_timeout.is_zero() || self.call_timeout.is_zero() {
            return invalid("connect_timeout and call_timeout must be greater than zero");
        }
        if let Some(token) = &self.token
            && (token.is_empty() || !token.bytes().all(|b| (0x21..0x7f).contains(&b)))
        {
            return invalid("the token must be non-empty printable ASCII without spaces");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c = SchedulerConfig::new("127.0.0.1:5050", FrameworkConfig::new("fw"));
        assert!(c.validate().is_ok());
        assert!(c.auto_acknowledge && c.reconnect && !c.suppressed);
        assert_eq!(
            SchedulerConfig::endpoint_uri(&c.manager),
            "http://127.0.0.1:5050"
        );
        assert_eq!(c.framework.role.as_str(), "*");
        assert_eq!(c.framework.default_class, "batch");
        let p = c.framework.to_proto(None);
        assert_eq!(p.framework_id, "");
        assert_eq!(p.failover_timeout_seconds, 7.0 * 24.0 * 3600.0);

        let mut bad = c.clone();
        bad.manager = " ".into();
        assert!(matches!(
            bad.validate(),
            Err(SdkError::InvalidConfig { .. })
        ));
        let bad = c.clone().with_token("has space");
        assert!(bad.validate().is_err());
        let bad = c.clone().with_token("");
        assert!(bad.validate().is_err());
        assert!(c.clone().with_token("s3cr3t").validate().is_ok());
        let mut bad = c.clone();
        bad.framework.framework_id = Some(FrameworkId::new(""));
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.framework.name.clear();
        assert!(bad.validate().is_err());
        let mut https = c;
        https.manager = "http://m:1".into();
        assert_eq!(SchedulerConfig::endpoint_uri(&https.manager), "http://m:1");
    }
}
