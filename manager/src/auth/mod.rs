//! Identity and access: principals with their own tokens
//! ([`principals`]), ACLs deciding what each may do ([`acl`]), and the
//! audit log of every decision that changes the cluster ([`audit`]).
//!
//! These are the pure parts, each tested on its own: the manager's APIs
//! authenticate a request's credentials to a [`acl::Subject`] and check it
//! against the ACLs before acting.

pub mod acl;
pub mod audit;
pub mod principals;

/// Why a principal could not be created, revoked or used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The name is not one.
    #[error("invalid principal name {0:?}: 1 to 64 letters, digits, '_' or '-'")]
    InvalidName(String),
    /// A principal of that name exists (or existed: names are not reused).
    #[error("principal {0:?} exists")]
    Exists(String),
    /// No principal of that name.
    #[error("no principal {0:?}")]
    Unknown(String),
}

use std::sync::{Arc, RwLock};

use acl::{Acls, Subject};
use audit::AuditLog;
use principals::Principals;
use strata_proto::time::Timestamp;
use tracing::warn;

use crate::services::store::{DocumentError, DocumentStore};

/// Why a change of the principals failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Refused.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Not written.
    #[error(transparent)]
    Store(#[from] DocumentError),
    /// The stored principals are not readable.
    #[error("the stored principals are not readable: {0}")]
    Corrupt(serde_json::Error),
    /// This manager does not lead (yet).
    #[error("this manager does not lead: principals are changed on the leader")]
    NotLeading,
}

impl AccessError {
    /// The HTTP status it is answered with.
    pub fn http_status(&self) -> u16 {
        match self {
            AccessError::Auth(AuthError::Unknown(_)) => 404,
            AccessError::Auth(AuthError::Exists(_)) => 409,
            AccessError::Auth(AuthError::InvalidName(_)) => 400,
            AccessError::Store(_) | AccessError::NotLeading | AccessError::Corrupt(_) => 503,
        }
    }
}

/// Who may do what: the cluster's token, the principals, the ACLs and the
/// audit log, shared by every API handler.
pub struct Access {
    /// The cluster's own token (the operator's), if set.
    token: Option<Arc<str>>,
    principals: RwLock<Principals>,
    acls: Option<Acls>,
    audit: Option<AuditLog>,
    /// Where the principals are kept (once this manager leads); changes
    /// are written one at a time, before they are answered.
    store: tokio::sync::Mutex<Option<Arc<dyn DocumentStore>>>,
}

impl Access {
    /// Access with the cluster's token, no principals and no ACLs: the
    /// token's holder may do everything, and without a token so may anyone
    /// (a loopback cluster).
    pub fn new(token: Option<&str>) -> Access {
        Access {
            token: token.map(Arc::from),
            principals: RwLock::new(Principals::default()),
            acls: None,
            audit: None,
            store: tokio::sync::Mutex::new(None),
        }
    }

    /// The same with ACLs.
    pub fn with_acls(mut self, acls: Option<Acls>) -> Access {
        self.acls = acls;
        self
    }

    /// The same with an audit log.
    pub fn with_audit(mut self, audit: Option<AuditLog>) -> Access {
        self.audit = audit;
        self
    }

    /// Writes a decision to the audit log (a failed write is logged).
    pub fn audit(&self, subject: &Subject, action: &str, object: &str, result: &str) {
        if let Some(log) = &self.audit
            && let Err(e) = log.record(Timestamp::now(), subject.name(), action, object, result)
        {
            warn!(path = %log.path().display(), error = %e, "cannot write the audit log");
        }
    }

    /// Checks and audits a change: `Ok` when `subject` may take `action`
    /// on `object` (written as `allowed`), the refusal otherwise (written
    /// as `denied`).
    pub fn authorize(
        &self,
        subject: &Subject,
        action: acl::Action,
        object: &str,
    ) -> Result<(), acl::Denied> {
        let verdict = self.check(subject, action, object);
        let result = if verdict.is_ok() { "allowed" } else { "denied" };
        self.audit(subject, action.as_str(), object, result);
        verdict
    }

    /// Loads the principals from where this manager, now leading, keeps
    /// them; later changes are written there.
    /// When they cannot be read, none are known (their tokens are
    /// refused, the operator's works) and changes are refused: a term's
    /// leader never serves an earlier term's principals.
    pub async fn lead(&self, store: Arc<dyn DocumentStore>) -> Result<(), AccessError> {
        let mut guard = self.store.lock().await;
        *guard = None;
        self.set_principals(Principals::default());
        let loaded = match store.read().await? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(AccessError::Corrupt)?,
            None => Principals::default(),
        };
        self.set_principals(loaded);
        *guard = Some(store);
        Ok(())
    }

    /// Changes the principals durably: `f` on a copy, the copy written,
    /// then made current. Audited under `action` on `object`.
    async fn change<T>(
        &self,
        subject: &Subject,
        action: &str,
        object: &str,
        f: impl FnOnce(&mut Principals) -> Result<T, AuthError>,
    ) -> Result<T, AccessError> {
        let guard = self.store.lock().await;
        let result = async {
            let store = guard.as_ref().ok_or(AccessError::NotLeading)?;
            let mut next = self.principals();
            let out = f(&mut next)?;
            let bytes = serde_json::to_vec_pretty(&next).map_err(AccessError::Corrupt)?;
            store.write(bytes).await?;
            self.set_principals(next);
            Ok(out)
        }
        .await;
        let verdict = match &result {
            Ok(_) => "allowed".to_owned(),
            Err(e) => format!("failed: {e}"),
        };
        self.audit(subject, action, object, &verdict);
        result
    }

    /// Creates a principal; returns its token (shown once).
    pub async fn add_principal(
        &self,
        subject: &Subject,
        name: &str,
    ) -> Result<String, AccessError> {
        self.change(subject, "create_principal", name, |p| {
            p.add(name, Timestamp::now())
        })
        .await
    }

    /// Revokes a principal's token.
    pub async fn revoke_principal(&self, subject: &Subject, name: &str) -> Result<(), AccessError> {
        self.change(subject, "revoke_principal", name, |p| {
            p.revoke(name, Timestamp::now())
        })
        .await
    }

    /// The cluster's token.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Replaces the principals.
    fn set_principals(&self, p: Principals) {
        *self.principals.write().unwrap_or_else(|e| e.into_inner()) = p;
    }

    /// The principals now.
    pub fn principals(&self) -> Principals {
        self.principals
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Who an `authorization` header names: the operator (the cluster's
    /// token), a principal (its own token, as a bearer token or as HTTP
    /// Basic's password with the principal as the user), or — only on a
    /// cluster without a token — an anonymous caller. `None`: refused.
    pub fn authenticate(&self, header: Option<&str>) -> Option<Subject> {
        let (user, secret) = match header {
            None => return self.token.is_none().then_some(Subject::Anonymous),
            Some(h) => credentials(h)?,
        };
        if let Some(expected) = &self.token
            && strata_proto::same_secret(&secret, expected)
        {
            return Some(Subject::Operator);
        }
        let principals = self.principals.read().unwrap_or_else(|e| e.into_inner());
        match principals.authenticate(&secret, user.as_deref()) {
            Some(name) => Some(Subject::Principal(name.to_owned())),
            None if self.token.is_none() && principals.is_empty() => Some(Subject::Anonymous),
            None => None,
        }
    }

    /// Whether `subject` may take `action` on `object`: always without
    /// ACLs (authentication was the whole check), else as they say.
    pub fn check(
        &self,
        subject: &Subject,
        action: acl::Action,
        object: &str,
    ) -> Result<(), acl::Denied> {
        match &self.acls {
            None => Ok(()),
            Some(a) => a.check(subject, action, object),
        }
    }

    /// Whether ACLs are configured.
    pub fn has_acls(&self) -> bool {
        self.acls.is_some()
    }
}

/// The user (HTTP Basic's) and secret of an `authorization` header.
fn credentials(header: &str) -> Option<(Option<String>, String)> {
    if let Some(token) = header.strip_prefix("Bearer ") {
        return Some((None, token.trim().to_owned()));
    }
    let basic = header.strip_prefix("Basic ")?;
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()?;
    let pair = String::from_utf8(decoded).ok()?;
    let (user, secret) = pair.split_once(':')?;
    Some((
        (!user.is_empty()).then(|| user.to_owned()),
        secret.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, secret: &str) -> String {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
        )
    }

    async fn leading(access: &Access, dir: &std::path::Path) {
        let store = Arc::new(crate::services::store::FileDocument::new(
            dir.join("principals.json"),
        ));
        access.lead(store).await.unwrap();
    }

    #[tokio::test]
    async fn credentials_name_the_operator_a_principal_or_no_one() {
        let dir = tempfile::tempdir().unwrap();
        let open = Access::new(None);
        assert_eq!(open.authenticate(None), Some(Subject::Anonymous));
        assert_eq!(
            open.authenticate(Some("Bearer x")),
            Some(Subject::Anonymous)
        );

        let a = Access::new(Some("root-token"));
        assert_eq!(a.authenticate(None), None);
        assert_eq!(
            a.authenticate(Some("Bearer root-token")),
            Some(Subject::Operator)
        );
        assert_eq!(
            a.authenticate(Some(&basic("anyone", "root-token"))),
            Some(Subject::Operator)
        );
        assert_eq!(a.authenticate(Some("Bearer nope")), None);
        assert_eq!(a.authenticate(Some("Token root-token")), None);
        let op = Subject::Operator;
        assert!(matches!(
            a.add_principal(&op, "etl").await,
            Err(AccessError::NotLeading)
        ));
        leading(&a, dir.path()).await;
        let etl = a.add_principal(&op, "etl").await.unwrap();
        let etl_subject = Some(Subject::Principal("etl".into()));
        assert_eq!(a.authenticate(Some(&format!("Bearer {etl}"))), etl_subject);
        assert_eq!(a.authenticate(Some(&basic("etl", &etl))), etl_subject);
        assert_eq!(a.authenticate(Some(&basic("ops", &etl))), None);
        assert!(matches!(
            a.add_principal(&op, "etl").await,
            Err(AccessError::Auth(AuthError::Exists(_)))
        ));
        // Written before answered: another manager leading from the same
        // store knows the principal.
        let b = Access::new(Some("root-token"));
        leading(&b, dir.path()).await;
        assert_eq!(b.authenticate(Some(&format!("Bearer {etl}"))), etl_subject);
        a.revoke_principal(&op, "etl").await.unwrap();
        assert_eq!(a.authenticate(Some(&format!("Bearer {etl}"))), None);

        // Without a token, principals' tokens still name them, and once
        // principals exist a wrong token is refused.
        let other = tempfile::tempdir().unwrap();
        let p = Access::new(None);
        leading(&p, other.path()).await;
        let ops = p.add_principal(&op, "ops").await.unwrap();
        assert_eq!(
            p.authenticate(Some(&format!("Bearer {ops}"))),
            Some(Subject::Principal("ops".into()))
        );
        assert_eq!(p.authenticate(Some("Bearer wrong")), None);
        assert_eq!(p.authenticate(None), Some(Subject::Anonymous));
    }

    #[tokio::test]
    async fn changes_and_refusals_are_audited() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("audit.jsonl")).unwrap();
        let acls = Acls::parse(br#"{"update_roles": [{"principals": ["ops"], "objects": "ANY"}]}"#)
            .unwrap();
        let a = Access::new(Some("t"))
            .with_acls(Some(acls))
            .with_audit(Some(log));
        leading(&a, dir.path()).await;
        a.add_principal(&Subject::Operator, "ops").await.unwrap();
        let ops = Subject::Principal("ops".into());
        let intern = Subject::Principal("intern".into());
        assert!(
            a.authorize(&ops, acl::Action::UpdateRoles, "analytics")
                .is_ok()
        );
        assert!(
            a.authorize(&intern, acl::Action::UpdateRoles, "analytics")
                .is_err()
        );
        assert!(a.revoke_principal(&ops, "nobody").await.is_err());
        let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        let lines: Vec<audit::AuditEntry> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let summary: Vec<(&str, &str, &str, &str)> = lines
            .iter()
            .map(|e| {
                (
                    e.principal.as_str(),
                    e.action.as_str(),
                    e.object.as_str(),
                    e.result.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("operator", "create_principal", "ops", "allowed"),
                ("ops", "update_roles", "analytics", "allowed"),
                ("intern", "update_roles", "analytics", "denied"),
                (
                    "ops",
                    "revoke_principal",
                    "nobody",
                    "failed: no principal \"nobody\""
                ),
            ]
        );
    }
}
