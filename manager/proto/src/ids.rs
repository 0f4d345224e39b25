//! Newtype identifiers. Each wraps a string on the wire and is its own type
//! in Rust, so an agent id can never be passed where a task id is expected.

/// Declares a newtype id: a string on the wire (serde `transparent`), its
/// own type in Rust, shown as the string. The crate using it needs `serde`
/// as a dependency.
///
/// ```
/// strata_proto::id_type!(
///     /// Identifies a widget.
///     WidgetId
/// );
/// let id = WidgetId::new("w-1");
/// assert_eq!((id.as_str(), format!("{id:?}")), ("w-1", r#"WidgetId("w-1")"#.to_owned()));
/// ```
#[macro_export]
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, PartialEq, Eq, PartialOrd, Ord, Hash, ::serde::Serialize, ::serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a string as this id.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Unwraps the id into its string.
            pub fn into_string(self) -> String {
                self.0
            }

            /// Whether the id is empty (unset on the wire).
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }
    };
}

id_type!(
    /// Identifies an agent for as long as the manager's registry remembers it.
    AgentId
);
id_type!(
    /// Identifies a framework across failovers.
    FrameworkId
);
id_type!(
    /// Identifies a task within its framework (chosen by the framework).
    TaskId
);
id_type!(
    /// Identifies one offer; an offer id is usable once.
    OfferId
);
id_type!(
    /// Identifies one subscription stream of a framework (Mesos-Stream-Id).
    StreamId
);
id_type!(
    /// A role: the unit of fair sharing, weights and quota.
    Role
);

/// A fresh random id (UUID v4), prefixed for readability.
pub fn random_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A 16-byte status-update uuid.
pub fn new_update_uuid() -> Vec<u8> {
    uuid::Uuid::new_v4().as_bytes().to_vec()
}
