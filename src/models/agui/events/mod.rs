//! One struct per AG-UI 1.0 event type, each with every member of `@ag-ui/core` 1.0.0.
//!
//! Every struct also has the members all events share (`timestamp`, `rawEvent`, `metadata`)
//! and `extra`, the members this version of the model does not know, kept as they came.

use std::marker::PhantomData;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::checks::{self, Path};
use super::members::{Key, KeySeed, Member, check_safe_integer};
use super::{EncryptedValueSubtype, InvalidEvent, ReasoningRole, Role, ToolCallResultContent};

/// What every event struct can do with its members, for [`AgUiEvent`](super::AgUiEvent)'s
/// reading and writing.
pub(crate) trait Members: Sized {
    /// Reads the members that follow (or surround) the `type` tag. `tagged`: the tag was read
    /// already, so another `type` is a duplicate.
    fn read_members<'de, A: MapAccess<'de>>(map: A, tagged: bool) -> Result<Self, A::Error>;
    /// Writes every member but `type`.
    fn write_members<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error>;
}

/// Reads a member, refusing a second occurrence.
fn read_once<'de, A: MapAccess<'de>, T: Member>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(T::read(map, name)?);
    Ok(())
}

/// A member's value, or its value when missing, or the "missing field" error if required.
fn present<T: Member, E: de::Error>(slot: Option<T>, name: &'static str) -> Result<T, E> {
    match slot {
        Some(value) => Ok(value),
        None => T::missing().ok_or_else(|| E::missing_field(name)),
    }
}

/// Deserialises an event struct on its own (without the enum), via [`Members`].
struct MembersVisitor<T>(PhantomData<T>);

impl<'de, T: Members> Visitor<'de> for MembersVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an AG-UI event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::read_members(map, false)
    }
}

macro_rules! agui_event {
    (@check $self:ident) => { Ok(()) };
    (@check $self:ident, $this:ident, $check:block) => {{
        let $this = $self;
        $check
    }};
    (
        $(#[$meta:meta])*
        $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident: $ty:ty = $wire:literal,
            )*
        }
        $(check($this:ident) $check:block)?
    ) => {
        $(#[$meta])*
        ///
        /// Also carries the members every event has (`timestamp`, `rawEvent`, `metadata`) and
        /// `extra`, the members this model does not know, written back as they came.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                pub $field: $ty,
            )*
            /// `timestamp`: when the event was created, in milliseconds since the Unix epoch;
            /// an integer within ±(2^53 − 1).
            pub timestamp: Option<i64>,
            /// `rawEvent`: the original upstream event, for debugging. Never `null` on the wire:
            /// `Some(Value::Null)` is written as absent.
            pub raw_event: Option<Value>,
            /// `metadata`: extra information attached to the event, open by key (the key
            /// `ag-ui` is reserved for the protocol).
            pub metadata: Option<Map<String, Value>>,
            /// Members this version of the model does not know (a newer protocol's additions),
            /// kept as they came and written back after the known ones. A key the model knows
            /// (or `type`) here is refused by `validate`.
            pub extra: Map<String, Value>,
        }

        impl $name {
            /// The wire names of the members the model knows, `type` aside.
            pub const MEMBERS: &'static [&'static str] =
                &[$($wire,)* "timestamp", "rawEvent", "metadata"];

            /// Checks the event against the AG-UI 1.0 schema: the error names the member.
            /// Events read from JSON were checked already.
            pub fn validate(&self) -> Result<(), InvalidEvent> {
                if let Some(timestamp) = self.timestamp {
                    check_safe_integer("timestamp", timestamp)?;
                }
                if let Some(key) = self
                    .extra
                    .keys()
                    .find(|key| *key == "type" || Self::MEMBERS.contains(&key.as_str()))
                {
                    return Err(InvalidEvent::new(
                        key.as_str(),
                        "is a member the model knows: set its field rather than `extra`",
                    ));
                }
                self.check_members()
            }

            /// The checks beyond the members' types.
            fn check_members(&self) -> Result<(), InvalidEvent> {
                agui_event!(@check self $(, $this, $check)?)
            }
        }

        impl Members for $name {
            fn read_members<'de, A: MapAccess<'de>>(
                mut map: A,
                tagged: bool,
            ) -> Result<Self, A::Error> {
                $( let mut $field: Option<$ty> = None; )*
                let mut timestamp: Option<Option<i64>> = None;
                let mut raw_event: Option<Option<Value>> = None;
                let mut metadata: Option<Option<Map<String, Value>>> = None;
                let mut extra = Map::new();
                while let Some(Key(key)) = map.next_key_seed(KeySeed)? {
                    match &*key {
                        $( $wire => read_once(&mut map, &mut $field, $wire)?, )*
                        "timestamp" => read_once(&mut map, &mut timestamp, "timestamp")?,
                        "rawEvent" => read_once(&mut map, &mut raw_event, "rawEvent")?,
                        "metadata" => read_once(&mut map, &mut metadata, "metadata")?,
                        "type" if tagged => return Err(de::Error::duplicate_field("type")),
                        "type" => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                        _ => {
                            let value = map.next_value()?;
                            extra.insert(key.into_owned(), value);
                        }
                    }
                }
                let event = Self {
                    $( $field: present($field, $wire)?, )*
                    timestamp: timestamp.flatten(),
                    raw_event: raw_event.flatten(),
                    metadata: metadata.flatten(),
                    extra,
                };
                event.check_members().map_err(de::Error::custom)?;
                Ok(event)
            }

            fn write_members<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
                $(
                    if !<$ty as Member>::is_absent(&self.$field) {
                        map.serialize_entry($wire, &self.$field)?;
                    }
                )*
                if let Some(timestamp) = &self.timestamp {
                    map.serialize_entry("timestamp", timestamp)?;
                }
                if let Some(raw) = self.raw_event.as_ref().filter(|raw| !raw.is_null()) {
                    map.serialize_entry("rawEvent", raw)?;
                }
                if let Some(metadata) = &self.metadata {
                    map.serialize_entry("metadata", metadata)?;
                }
                for (key, value) in &self.extra {
                    if key != "type" && !Self::MEMBERS.contains(&key.as_str()) {
                        map.serialize_entry(key, value)?;
                    }
                }
                Ok(())
            }
        }

        /// The members without the `type` tag (that is [`AgUiEvent`](crate::models::agui::AgUiEvent)'s).
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(None)?;
                self.write_members(&mut map)?;
                map.end()
            }
        }

        /// Reads the members, checked; a `type` member is ignored (it is the enum's).
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_map(MembersVisitor::<Self>(PhantomData))
            }
        }
    };
}

/// A text message's role must be one of developer, system, assistant, user.
fn text_role(role: Option<Role>) -> Result<(), InvalidEvent> {
    match role {
        None | Some(Role::Developer | Role::System | Role::Assistant | Role::User) => Ok(()),
        Some(other) => Err(InvalidEvent::new(
            "role",
            format!(
                "must be one of developer, system, assistant, user, got {:?}",
                other.as_str()
            ),
        )),
    }
}

// The event types, by family; each file uses the macro above.
mod lifecycle;
mod text;
mod tools;
mod state;
mod reasoning;
mod subagents;
mod extension;

pub use extension::*;
pub use lifecycle::*;
pub use reasoning::*;
pub use state::*;
pub use subagents::*;
pub use text::*;
pub use tools::*;
