//! Typed identifiers that cross actor and HTTP boundaries: users, sessions, streams, messages.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The id of a person, as set by the trusted proxy in `X-User-ID` (a positive integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = i64)]
pub struct UserId(i64);

impl UserId {
    /// Accepts only positive ids, like the original's `requireUserID`.
    pub fn new(raw: i64) -> Option<Self> {
        (raw > 0).then_some(Self(raw))
    }

    /// The numeric value.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id that came from a client or from storage.
            pub fn from_raw(raw: impl Into<String>) -> Self {
                Self(raw.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A chat session (plain UUID, as the original's database generated them).
    SessionId
);
string_id!(
    /// One streamed turn: `stream_<uuid>`.
    StreamId
);

impl SessionId {
    /// A fresh, time-ordered session id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

impl StreamId {
    /// A fresh stream id.
    pub fn generate() -> Self {
        Self(format!("stream_{}", uuid::Uuid::now_v7()))
    }
}

/// A fresh id with the given prefix, e.g. `user_<uuid>` or `assistant_<uuid>` as in the original.
pub fn prefixed_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_must_be_positive() {
        assert!(UserId::new(0).is_none());
        assert!(UserId::new(-3).is_none());
        assert_eq!(UserId::new(7).map(UserId::get), Some(7));
    }

    #[test]
    fn generated_ids_are_unique_and_prefixed() {
        let a = StreamId::generate();
        let b = StreamId::generate();
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("stream_"));
        assert!(prefixed_id("user").starts_with("user_"));
    }
}
