//! How one member of an AG-UI event is read, checked and written.
//!
//! Each event struct reads its members with [`Member::read`] straight from serde's `MapAccess`:
//! no intermediate buffer, known keys matched without allocating, and every type error naming
//! the member (`invalid type: integer `5`, expected `messageId` to be a string`). Members the
//! model does not know are read as [`Value`]s into the struct's `extra` map.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::InvalidEvent;

/// The largest integer a JavaScript number holds exactly: `Number.MAX_SAFE_INTEGER`,
/// 2^53 − 1. AG-UI timestamps and token counts must lie within ±this.
pub const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_991;

/// A member type: how it is read (naming the member in errors), what a missing one is, and
/// whether it is written.
pub(crate) trait Member: Sized {
    /// Reads the member's value from `map`, right after its key.
    fn read<'de, A: MapAccess<'de>>(map: &mut A, name: &'static str) -> Result<Self, A::Error>;
    /// The value of a member absent from the input: `None` when the member is required.
    fn missing() -> Option<Self>;
    /// Whether the member is left out when written (absent, or an optional `null`).
    fn is_absent(&self) -> bool;
}

/// The message of a member's type error: "expected `{name}` to be {what}".
struct Expected<'a>(&'static str, &'a str);

impl fmt::Display for Expected<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` to be {}", self.0, self.1)
    }
}

/// Reads a string, naming the member in the type error.
struct StrSeed(&'static str);

impl<'de> DeserializeSeed<'de> for StrSeed {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_string(self)
    }
}

impl<'de> Visitor<'de> for StrSeed {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Expected(self.0, "a string"), f)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
}

/// Reads `null` as `None`, anything else with the inner seed.
struct OptSeed<S>(S);

impl<'de, S: DeserializeSeed<'de> + Visitor<'de, Value = <S as DeserializeSeed<'de>>::Value>>
    DeserializeSeed<'de> for OptSeed<S>
{
    type Value = Option<<S as DeserializeSeed<'de>>::Value>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de> + Visitor<'de, Value = <S as DeserializeSeed<'de>>::Value>>
    Visitor<'de> for OptSeed<S>
{
    type Value = Option<<S as DeserializeSeed<'de>>::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

/// Reads an integer within ±(2^53 − 1); floats, strings and anything else are refused.
struct IntSeed(&'static str);

impl<'de> DeserializeSeed<'de> for IntSeed {
    type Value = i64;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<i64, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IntSeed {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Expected(self.0, "an integer number of milliseconds"), f)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        check_safe_integer(self.0, v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        let v = i64::try_from(v).unwrap_or(i64::MAX);
        check_safe_integer(self.0, v).map_err(E::custom)
    }

    /// A number serde_json keeps as its text (its `arbitrary_precision` feature, which any
    /// crate of an application can turn on) comes as a map that `Number` reads back: every
    /// number that is not an integer literal, `1.7E12` included.
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<i64, A::Error> {
        let not_a_number = || de::Error::invalid_type(de::Unexpected::Map, &self);
        let number = serde_json::Number::deserialize(de::value::MapAccessDeserializer::new(map))
            .map_err(|_: A::Error| not_a_number())?;
        if let Some(v) = number.as_i64() {
            self.visit_i64(v)
        } else if let Some(v) = number.as_u64() {
            self.visit_u64(v)
        } else {
            match number.as_f64() {
                Some(v) => self.visit_f64(v),
                None => Err(not_a_number()),
            }
        }
    }

    /// A whole number written in float form (`1.7E12` from a Java double, `1700000000000.0`
    /// from a Python float, `-0`) is an integer to the official schemas (`z.int()` checks the
    /// value, not the spelling), and to a JavaScript client.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        if v.fract() == 0.0 && v.abs() <= MAX_SAFE_INTEGER as f64 {
            return Ok(v as i64);
        }
        Err(E::custom(InvalidEvent::new(
            self.0,
            format!("must be an integer number of milliseconds, got {v}"),
        )))
    }
}

/// `v` if it lies within ±(2^53 − 1), the integers a JavaScript number holds exactly.
pub(crate) fn check_safe_integer(member: &str, v: i64) -> Result<i64, InvalidEvent> {
    if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&v) {
        Ok(v)
    } else {
        Err(InvalidEvent::new(
            member,
            format!("{v} is outside ±(2^53 − 1), the integers a JavaScript number holds exactly"),
        ))
    }
}

/// The kind of a JSON value, for error messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Member for String {
    fn read<'de, A: MapAccess<'de>>(map: &mut A, name: &'static str) -> Result<Self, A::Error> {
        map.next_value_seed(StrSeed(name))
    }
    fn missing() -> Option<Self> {
        None
    }
    fn is_absent(&self) -> bool {
        false
    }
}

impl Member for Option<String> {
    fn read<'de, A: MapAccess<'de>>(map: &mut A, name: &'static str) -> Result<Self, A::Error> {
        map.next_value_seed(OptSeed(StrSeed(name)))
    }
    fn missing() -> Option<Self> {
        Some(None)
    }
    fn is_absent(&self) -> bool {
        self.is_none()
    }
}

/// `timestamp`: an integer within ±(2^53 − 1).
impl Member for Option<i64> {
    fn read<'de, A: MapAccess<'de>>(map: &mut A, name: &'static str) -> Result<Self, A::Error> {
        map.next_value_seed(OptSeed(IntSeed(name)))
    }
    fn missing() -> Option<Self> {
        Some(None)
    }
    fn is_absent(&self) -> bool {
        self.is_none()
    }
}

/// A required member of any JSON value, `null` included.
impl Member for Value {
    fn read<'de, A: MapAccess<'de>>(map: &mut A, _: &'static str) -> Result<Self, A::Error> {
        map.next_value()
    }
    fn missing() -> Option<Self> {
        None
    }
    fn is_absent(&self) -> bool {
        false
    }
}

/// An optional member of any JSON value but `null`, which is read (and written) as absent.
impl Member for Option<Value> {
    fn read<'de, A: MapAccess<'de>>(map: &mut A, _: &'static str) -> Result<Self, A::Error> {
        Ok(map.next_value::<Option<Value>>()?.filter(|v| !v.is_null()))
    }
    fn missing() -> Option<Self> {
        Some(None)
    }
    fn is_absent(&self) -> bool {
        self.as_ref().is_none_or(Value::is_null)
    }
}

/// Reads a member as a JSON value and converts it, naming the member in the error.
fn read_as<'de, A: MapAccess<'de>, T>(
    map: &mut A,
    name: &'static str,
    convert: impl FnOnce(Value) -> Result<T, String>,
) -> Result<Option<T>, A::Error> {
    match map.next_value::<Option<Value>>()? {
        None | Some(Value::Null) => Ok(None),
        Some(value) => convert(value)
            .map(Some)
            .map_err(|reason| de::Error::custom(InvalidEvent::new(name, reason))),
    }
}

/// `metadata` and other optional objects.
impl Member for Option<Map<String, Value>> {
    fn read<'de, A: MapAccess<'de>>(map: &mut A, name: &'static str) -> Result<Self, A::Error> {
        read_as(map, name, |value| match value {
            Value::Object(object) => Ok(object),
            other => Err(format!("must be an object, got {}", kind(&other))),
        })
    }
    fn missing() -> Option<Self> {
        Some(None)
    }
    fn is_absent(&self) -> bool {
        self.is_none()
    }
}

/// A required object (ACTIVITY_SNAPSHOT `content`).
impl Member for Map<String, Value> {
    fn read<'de, A: MapAccess<'de>>(map: &mut A, name: &'static str) -> Result<Self, A::Error> {
        Option::<Map<String, Value>>::read(map, name)?.ok_or_else(|| {
            de::Error::custom(InvalidEvent::new(name, "must be an object, got null"))
        })
    }
    fn missing() -> Option<Self> {
        None
    }
    fn is_absent(&self) -> bool {
        false
    }
}

impl Member for Option<bool> {
    fn read<'de, A: MapAccess<'de>>(map: &mut A, name: &'static str) -> Result<Self, A::Error> {
        read_as(map, name, |value| match value {
            Value::Bool(b) => Ok(b),
            other => Err(format!("must be a boolean, got {}", kind(&other))),
        })
    }
    fn missing() -> Option<Self> {
        Some(None)
    }
    fn is_absent(&self) -> bool {
        self.is_none()
    }
}

/// A required array (JSON Patch operations, messages).
impl Member for Vec<Value> {
    fn read<'de, A: MapAccess<'de>>(map: &mut A, name: &'static str) -> Result<Self, A::Error> {
        Option::<Vec<Value>>::read(map, name)?
            .ok_or_else(|| de::Error::custom(InvalidEvent::new(name, "must be an array, got null")))
    }
    fn missing() -> Option<Self> {
        None
    }
    fn is_absent(&self) -> bool {
        false
    }
}

impl Member for Option<Vec<Value>> {
    fn read<'de, A: MapAccess<'de>>(map: &mut A, name: &'static str) -> Result<Self, A::Error> {
        read_as(map, name, |value| match value {
            Value::Array(items) => Ok(items),
            other => Err(format!("must be an array, got {}", kind(&other))),
        })
    }
    fn missing() -> Option<Self> {
        Some(None)
    }
    fn is_absent(&self) -> bool {
        self.is_none()
    }
}

/// A string member with a fixed set of values, read by its wire name.
pub(crate) trait WireEnum: Sized + Copy + 'static {
    /// Every value with its wire name.
    const ALL: &'static [(Self, &'static str)];

    /// The value named `wire`.
    fn from_wire(wire: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, w)| *w == wire).map(|(v, _)| *v)
    }

    /// The error for a name that is none of them.
    fn unknown(name: &str, wire: &str) -> InvalidEvent {
        let all: Vec<&str> = Self::ALL.iter().map(|(_, w)| *w).collect();
        InvalidEvent::new(
            name,
            format!("must be one of {}, got {wire:?}", all.join(", ")),
        )
    }
}

/// Reads an optional [`WireEnum`].
pub(crate) fn read_wire_enum<'de, A: MapAccess<'de>, T: WireEnum>(
    map: &mut A,
    name: &'static str,
) -> Result<Option<T>, A::Error> {
    match map.next_value_seed(OptSeed(StrSeed(name)))? {
        None => Ok(None),
        Some(wire) => T::from_wire(&wire)
            .map(Some)
            .ok_or_else(|| de::Error::custom(T::unknown(name, &wire))),
    }
}

/// An object key: borrowed from the input when it can be, so known keys cost no allocation.
pub(crate) struct Key<'de>(pub(crate) Cow<'de, str>);

/// Reads a [`Key`].
pub(crate) struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v)))
    }
}

/// Reads the value of a `type` member: a string, borrowed when the input allows.
pub(crate) struct TagSeed;

impl<'de> DeserializeSeed<'de> for TagSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for TagSeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Expected("type", "a string"), f)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use crate::models::AgUiEvent;

    /// `scripts/test` runs this with serde_json's `arbitrary_precision` too, which any crate of
    /// an application can turn on (feature unification): serde_json then hands a number that
    /// is not an integer literal to the visitor as a map holding its text.
    #[test]
    fn timestamps_in_float_form_are_read_with_any_serde_json_features() {
        for (text, expected) in [
            ("1.7E12", Some(1_700_000_000_000)),
            ("1700000000000.0", Some(1_700_000_000_000)),
            ("-0", Some(0)),
            ("-0.0", Some(0)),
            ("42", Some(42)),
            ("9007199254740991", Some(super::MAX_SAFE_INTEGER)),
            ("9007199254740992", None),
            ("9007199254740992.0", None),
            ("12345678901234567890", None),
            ("1.5", None),
            ("{}", None),
            ("\"5\"", None),
        ] {
            let json =
                format!(r#"{{"type":"TEXT_MESSAGE_END","messageId":"m","timestamp":{text}}}"#);
            let from_text = serde_json::from_str::<AgUiEvent>(&json);
            assert_eq!(
                from_text.as_ref().ok().and_then(AgUiEvent::timestamp),
                expected,
                "{text}: {from_text:?}"
            );
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&json) {
                let from_value = serde_json::from_value::<AgUiEvent>(value);
                assert_eq!(
                    from_value.as_ref().ok().and_then(AgUiEvent::timestamp),
                    expected,
                    "{text} as a Value: {from_value:?}"
                );
            }
            if let Err(error) = from_text {
                assert!(error.to_string().contains("`timestamp`"), "{text}: {error}");
            }
        }
    }
}
