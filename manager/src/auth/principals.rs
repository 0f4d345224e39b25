//! Principals: named identities, each with its own token, stored hashed.
//!
//! A token is `NAME.SECRET`: the principal's name, then 256 random bits in
//! hex. The manager keeps only a salted SHA-256 of the secret, so the
//! document holding the principals reveals no token; a token is shown once,
//! when it is created. A revoked principal keeps its record (and its name
//! cannot be reused), as a removed framework keeps its id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use strata_proto::time::Timestamp;

use super::AuthError;

/// One principal as it is stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrincipalRecord {
    /// Its name.
    pub name: String,
    /// The salt of its hash (hex).
    pub salt: String,
    /// SHA-256 of the salt and the secret (hex).
    pub hash: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was revoked; its token is refused from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
}

/// A principal as the API lists it (no hash).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrincipalView {
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
}

/// Every principal, by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Principals {
    principals: BTreeMap<String, PrincipalRecord>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn digest(salt: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(b":");
    h.update(secret.as_bytes());
    hex(&h.finalize())
}

/// Checks a principal's name: 1 to 64 letters, digits, `_` or `-`.
pub fn validate_name(name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(AuthError::InvalidName(name.to_owned()))
    }
}

impl Principals {
    /// Creates a principal; returns its token (shown once).
    pub fn add(&mut self, name: &str, now: Timestamp) -> Result<String, AuthError> {
        validate_name(name)?;
        if self.principals.contains_key(name) {
            return Err(AuthError::Exists(name.to_owned()));
        }
        let secret = random_hex();
        let salt = random_hex();
        let hash = digest(&salt, &secret);
        self.principals.insert(
            name.to_owned(),
            PrincipalRecord {
                name: name.to_owned(),
                salt,
                hash,
                created_at: now,
                revoked_at: None,
            },
        );
        Ok(format!("{name}.{secret}"))
    }

    /// Revokes a principal: its token is refused from now on.
    pub fn revoke(&mut self, name: &str, now: Timestamp) -> Result<(), AuthError> {
        let p = self
            .principals
            .get_mut(name)
            .ok_or_else(|| AuthError::Unknown(name.to_owned()))?;
        if p.revoked_at.is_none() {
            p.revoked_at = Some(now);
        }
        Ok(())
    }

    /// The principal a token names, if the token is its own and it is not
    /// revoked. With `user` (HTTP Basic's user name, a Mesos principal),
    /// the token must be that principal's.
    pub fn authenticate(&self, token: &str, user: Option<&str>) -> Option<&str> {
        let (name, secret) = token.rsplit_once('.')?;
        if user.is_some_and(|u| u != name) {
            return None;
        }
        let p = self.principals.get(name)?;
        if p.revoked_at.is_some() {
            return None;
        }
        strata_proto::same_secret(&digest(&p.salt, secret), &p.hash).then_some(p.name.as_str())
    }

    /// Every principal, by name.
    pub fn list(&self) -> Vec<PrincipalView> {
        self.principals
            .values()
            .map(|p| PrincipalView {
                name: p.name.clone(),
                created_at: p.created_at,
                revoked_at: p.revoked_at,
            })
            .collect()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.principals.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_principal_until_it_is_revoked() {
        let mut p = Principals::default();
        let now = Timestamp::from_millis(1_000);
        let alice = p.add("alice", now).unwrap();
        let bob = p.add("bob", now).unwrap();
        assert!(alice.starts_with("alice.") && alice.len() == "alice.".len() + 64);
        assert_eq!(p.authenticate(&alice, None), Some("alice"));
        assert_eq!(p.authenticate(&alice, Some("alice")), Some("alice"));
        assert_eq!(p.authenticate(&alice, Some("bob")), None, "another's name");
        assert_eq!(p.authenticate(&bob, None), Some("bob"));
        // A secret under another name, a changed secret, no secret.
        let (_, secret) = alice.split_once('.').unwrap();
        assert_eq!(p.authenticate(&format!("bob.{secret}"), None), None);
        assert_eq!(p.authenticate(&format!("{alice}0"), None), None);
        assert_eq!(p.authenticate("alice", None), None);
        // Nothing stored reveals the token.
        let stored = serde_json::to_string(&p).unwrap();
        assert!(!stored.contains(secret), "{stored}");
        assert_eq!(serde_json::from_str::<Principals>(&stored).unwrap(), p);

        p.revoke("alice", Timestamp::from_millis(2_000)).unwrap();
        assert_eq!(p.authenticate(&alice, None), None);
        assert_eq!(p.authenticate(&bob, None), Some("bob"));
        assert_eq!(
            p.add("alice", now),
            Err(AuthError::Exists("alice".into())),
            "a revoked name is not reused"
        );
        assert_eq!(
            p.revoke("carol", now),
            Err(AuthError::Unknown("carol".into()))
        );
        assert!(matches!(p.add("a b", now), Err(AuthError::InvalidName(_))));
        let names: Vec<_> = p
            .list()
            .into_iter()
            .map(|v| (v.name, v.revoked_at.is_some()))
            .collect();
        assert_eq!(
            names,
            [("alice".to_owned(), true), ("bob".to_owned(), false)]
        );
    }
}
