//! [`UserId`]: whose connections an event goes to.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// The user a channel belongs to.
///
/// Cheap to clone (an `Arc<str>` inside), so it can key the registry and travel with every
/// subscription without copying the string. Any string is a valid id: the application decides
/// what identifies a user (its authentication subject, typically). The id never reaches the
/// wire, so it needs no escaping.
#[derive(Clone, Eq, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

impl PartialEq for UserId {
    fn eq(&self, other: &Self) -> bool {
        // The registry's key is a clone of the id the channel was created with: a publisher
        // that keeps its ids (or clones of them) is answered without reading the string, cold
        // in a large registry. `Arc<str>`'s own `==` always compares the bytes.
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

// The string's hash, as the derive gave it: equal ids hash alike, and so do a `UserId` and the
// `str` it borrows as.
impl std::hash::Hash for UserId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl UserId {
    /// Creates a user id.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for UserId {
    fn from(id: &str) -> Self {
        Self(id.into())
    }
}

impl From<String> for UserId {
    fn from(id: String) -> Self {
        Self(id.into())
    }
}

impl From<&String> for UserId {
    fn from(id: &String) -> Self {
        Self(id.as_str().into())
    }
}

impl From<Arc<str>> for UserId {
    fn from(id: Arc<str>) -> Self {
        Self(id)
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for UserId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl serde::Serialize for UserId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::from)
    }
}
