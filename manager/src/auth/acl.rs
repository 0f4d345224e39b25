//! ACLs in the manner of Mesos: for each action, an ordered list of rules
//! naming principals and the objects they may act on. The first rule whose
//! principals match the subject decides: it permits when its objects match,
//! and denies otherwise. With ACLs configured, what no rule permits is
//! denied; the cluster's own token (the operator's) is never refused.
//!
//! ```json
//! {
//!   "register_frameworks": [{"principals": ["etl"], "objects": ["analytics"]}],
//!   "run_tasks":           [{"principals": "ANY", "objects": ["nobody"]}],
//!   "teardown_frameworks": [{"principals": ["ops"], "objects": "ANY"}],
//!   "update_roles":        [{"principals": ["ops"], "objects": "ANY"}],
//!   "manage_apps":         [{"principals": ["web-team"], "objects": ["/web/"]}],
//!   "view_sandboxes":      [{"principals": ["etl"], "objects": ["etl"]}],
//!   "view_ui":             [{"principals": "ANY", "objects": "ANY"}]
//! }
//! ```
//!
//! Objects by action: roles (`register_frameworks`, `update_roles`), task
//! users (`run_tasks`), the principals of the frameworks acted on
//! (`teardown_frameworks`, `view_sandboxes`; `operator` for a framework
//! subscribed with the cluster's token), app ids (`manage_apps`: `/web/`
//! covers `/web/api`), agents (`manage_agents`: drains), pages
//! (`view_ui`: `cluster`, `tasks`, `services`, `jobs`).

use serde::{Deserialize, Serialize};

/// An action an ACL governs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Subscribe a framework in a role.
    RegisterFrameworks,
    /// Launch tasks as a user.
    RunTasks,
    /// Tear down a framework (of a principal).
    TeardownFrameworks,
    /// Change a role's weight or quota.
    UpdateRoles,
    /// Create, change or delete apps (by id prefix).
    ManageApps,
    /// Read tasks' sandboxes (of frameworks of a principal).
    ViewSandboxes,
    /// Drain and undrain agents.
    ManageAgents,
    /// See a section of the web UI.
    ViewUi,
}

impl Action {
    /// Its name, as in the ACL file and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::RegisterFrameworks => "register_frameworks",
            Action::RunTasks => "run_tasks",
            Action::TeardownFrameworks => "teardown_frameworks",
            Action::UpdateRoles => "update_roles",
            Action::ManageApps => "manage_apps",
            Action::ViewSandboxes => "view_sandboxes",
            Action::ManageAgents => "manage_agents",
            Action::ViewUi => "view_ui",
        }
    }
}

/// Who or what a rule names: `"ANY"`, `"NONE"` or a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Entities {
    /// `"ANY"` or `"NONE"`.
    Keyword(Keyword),
    /// Exactly these.
    Some(Vec<String>),
}

/// The two words a rule may use instead of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Keyword {
    /// Every one.
    #[serde(rename = "ANY")]
    Any,
    /// None.
    #[serde(rename = "NONE")]
    None,
}

impl Entities {
    fn matches(&self, what: &str, prefix: bool) -> bool {
        match self {
            Entities::Keyword(Keyword::Any) => true,
            Entities::Keyword(Keyword::None) => false,
            Entities::Some(list) => list
                .iter()
                .any(|x| x == what || (prefix && x.ends_with('/') && what.starts_with(x.as_str()))),
        }
    }
}

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The subjects it is about.
    pub principals: Entities,
    /// What they may act on.
    pub objects: Entities,
}

/// The ACLs of a cluster, by action.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acls {
    /// Roles principals may subscribe frameworks in.
    #[serde(default)]
    pub register_frameworks: Vec<Rule>,
    /// Users principals' tasks may run as.
    #[serde(default)]
    pub run_tasks: Vec<Rule>,
    /// Principals whose frameworks principals may tear down.
    #[serde(default)]
    pub teardown_frameworks: Vec<Rule>,
    /// Roles whose weight and quota principals may change.
    #[serde(default)]
    pub update_roles: Vec<Rule>,
    /// App id prefixes principals may create, change and delete.
    #[serde(default)]
    pub manage_apps: Vec<Rule>,
    /// Principals whose frameworks' sandboxes principals may read.
    #[serde(default)]
    pub view_sandboxes: Vec<Rule>,
    /// Agents principals may drain.
    #[serde(default)]
    pub manage_agents: Vec<Rule>,
    /// Sections of the web UI principals may see.
    #[serde(default)]
    pub view_ui: Vec<Rule>,
}

/// Who asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// The holder of the cluster's own token: every action is permitted.
    Operator,
    /// A principal.
    Principal(String),
    /// No credentials (a cluster without a token, on loopback).
    Anonymous,
}

/// Why an action was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{subject} may not {action} {object:?} (the ACLs permit it to no rule that names it)", action = .action.as_str())]
pub struct Denied {
    /// Who asked.
    pub subject: String,
    /// What.
    pub action: Action,
    /// On what.
    pub object: String,
}

impl Subject {
    /// Whether it may act for a framework subscribed by `recorded` (a
    /// principal's name; empty for the operator or an anonymous caller):
    /// the operator for any, a principal for its own, an anonymous caller
    /// for none of a principal's.
    pub fn may_act_for(&self, recorded: &str) -> bool {
        match self {
            Subject::Operator => true,
            Subject::Principal(p) => p == recorded,
            Subject::Anonymous => recorded.is_empty(),
        }
    }

    /// Its name in the audit log: the principal's, `operator` or
    /// `anonymous`.
    pub fn name(&self) -> &str {
        match self {
            Subject::Operator => "operator",
            Subject::Principal(p) => p,
            Subject::Anonymous => "anonymous",
        }
    }
}

impl Acls {
    /// Reads ACLs from their JSON.
    pub fn parse(json: &[u8]) -> Result<Acls, serde_json::Error> {
        serde_json::from_slice(json)
    }

    fn rules(&self, action: Action) -> &[Rule] {
        match action {
            Action::RegisterFrameworks => &self.register_frameworks,
            Action::RunTasks => &self.run_tasks,
            Action::TeardownFrameworks => &self.teardown_frameworks,
            Action::UpdateRoles => &self.update_roles,
            Action::ManageApps => &self.manage_apps,
            Action::ViewSandboxes => &self.view_sandboxes,
            Action::ManageAgents => &self.manage_agents,
            Action::ViewUi => &self.view_ui,
        }
    }

    /// Whether `subject` may take `action` on `object`: the first rule
    /// naming the subject decides; none naming it denies. An anonymous
    /// subject is named only by `"ANY"`.
    pub fn check(&self, subject: &Subject, action: Action, object: &str) -> Result<(), Denied> {
        let name = match subject {
            Subject::Operator => return Ok(()),
            Subject::Principal(p) => Some(p.as_str()),
            Subject::Anonymous => None,
        };
        let prefix = action == Action::ManageApps;
        let deciding = self.rules(action).iter().find(|r| match name {
            Some(n) => r.principals.matches(n, false),
            None => r.principals == Entities::Keyword(Keyword::Any),
        });
        match deciding {
            Some(r) if r.objects.matches(object, prefix) => Ok(()),
            _ => Err(Denied {
                subject: name.map_or_else(
                    || "an anonymous caller".to_owned(),
                    |n| format!("principal {n:?}"),
                ),
                action,
                object: object.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acls() -> Acls {
        Acls::parse(
            br#"{
              "register_frameworks": [
                {"principals": ["etl"], "objects": ["analytics", "batch"]},
                {"principals": ["intern"], "objects": "NONE"},
                {"principals": "ANY", "objects": ["sandbox"]}
              ],
              "manage_apps": [{"principals": ["web-team"], "objects": ["/web/", "/shop"]}],
              "view_ui": [{"principals": "ANY", "objects": "ANY"}]
            }"#,
        )
        .unwrap()
    }

    #[test]
    fn the_first_rule_naming_the_subject_decides_and_the_rest_is_denied() {
        let a = acls();
        let etl = Subject::Principal("etl".into());
        assert!(
            a.check(&etl, Action::RegisterFrameworks, "analytics")
                .is_ok()
        );
        // The rule naming etl decides: "sandbox" is not in it.
        let denied = a
            .check(&etl, Action::RegisterFrameworks, "sandbox")
            .unwrap_err();
        assert_eq!(denied.action, Action::RegisterFrameworks);
        assert!(denied.to_string().contains("\"etl\""), "{denied}");
        let intern = Subject::Principal("intern".into());
        assert!(
            a.check(&intern, Action::RegisterFrameworks, "sandbox")
                .is_err()
        );
        let other = Subject::Principal("someone".into());
        assert!(
            a.check(&other, Action::RegisterFrameworks, "sandbox")
                .is_ok()
        );
        assert!(
            a.check(&other, Action::RegisterFrameworks, "analytics")
                .is_err()
        );
        assert!(
            a.check(&Subject::Anonymous, Action::RegisterFrameworks, "sandbox")
                .is_ok()
        );
        // Nothing said about an action: denied, except to the operator.
        assert!(a.check(&etl, Action::TeardownFrameworks, "etl").is_err());
        assert!(
            a.check(&Subject::Operator, Action::TeardownFrameworks, "x")
                .is_ok()
        );
        assert!(
            a.check(&Subject::Anonymous, Action::UpdateRoles, "x")
                .is_err()
        );
        // App ids by prefix where the rule's object ends in a slash.
        let web = Subject::Principal("web-team".into());
        assert!(a.check(&web, Action::ManageApps, "/web/api").is_ok());
        assert!(a.check(&web, Action::ManageApps, "/shop").is_ok());
        assert!(a.check(&web, Action::ManageApps, "/shopping").is_err());
        assert!(a.check(&web, Action::ManageApps, "/webmail").is_err());
        assert!(a.check(&Subject::Anonymous, Action::ViewUi, "jobs").is_ok());
    }

    #[test]
    fn bad_acls_are_refused_with_their_place() {
        for bad in [
            r#"{"register_framework": []}"#,
            r#"{"run_tasks": [{"principals": "SOME", "objects": "ANY"}]}"#,
            r#"{"run_tasks": [{"principals": ["a"]}]}"#,
        ] {
            assert!(Acls::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
