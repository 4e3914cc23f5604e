//! serde_json's compact output, with a fast path for strings that need no escaping.
//!
//! A publish encodes its event once, and for a typical agent event most of that is serde_json
//! looking at each byte of each string for one that needs an escape (`format_escaped_str`
//! examines one byte at a time: about half of a `TEXT_MESSAGE_CONTENT` publish). [`to_writer`]
//! writes exactly what `serde_json::to_writer` writes, byte for byte; it only changes how a
//! string value is checked:
//!
//! * sixteen bytes at a time, for `"`, `\` and the control characters below U+0020, the only
//!   bytes JSON escapes;
//! * a string with none of them is written as it is, between quotes, through serde_json's own
//!   raw-fragment path (the one [`RawValue`](serde_json::value::RawValue) uses);
//! * a string with any of them is handed to serde_json, which escapes it as always.
//!
//! Everything else (numbers, map keys, structure, a `RawValue` of the event's own) is serde_json's
//! doing: the wrapper delegates every call, and wraps only the values nested in maps, sequences,
//! structs, variants, `Some` and newtypes, so that their strings take the same path.
//!
//! The raw path relies on serde_json's `raw_value` token, the one `RawValue` relies on. It is
//! checked once per process against serde_json's own output, and a serde_json that writes it
//! differently sends every string through serde_json instead; the tests compare this output
//! with serde_json's for every kind of value, with and without `arbitrary_precision`. The
//! fields of serde_json's private structs (those named `$serde_json::private::...`: `RawValue`,
//! and `Number` with `arbitrary_precision`) are passed through unwrapped: that prefix is
//! assumed, and a private token without it would make such a value fail to encode, which the
//! tests would show.
//!
//! Each level of nesting costs the wrapper a little more stack than serde_json alone (about
//! 13 % in a debug build); serde_json itself sets no depth limit when writing.

use std::fmt::Display;
use std::sync::OnceLock;

use serde::ser::{
    Serialize, SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant, SerializeTuple,
    SerializeTupleStruct, SerializeTupleVariant, Serializer,
};

/// The name serde_json gives the one-field struct it writes unchanged (`serde_json::raw::TOKEN`).
const RAW: &str = "$serde_json::private::RawValue";
/// The prefix of serde_json's private struct names (`RawValue`, and `Number` with
/// `arbitrary_precision`): their fields are serde_json's own protocol and pass unwrapped.
const PRIVATE: &str = "$serde_json::private::";

/// Writes `value` as compact JSON, exactly as `serde_json::to_writer` would.
pub(crate) fn to_writer<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> serde_json::Result<()> {
    if !raw_path_works() {
        return serde_json::to_writer(out, value);
    }
    value.serialize(Fast(&mut serde_json::Serializer::new(out)))
}

/// `value` as compact JSON, exactly as `serde_json::to_vec` would.
pub(crate) fn to_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    to_writer(&mut out, value)?;
    Ok(out)
}

/// Whether `s` holds a byte JSON escapes: `"`, `\`, or one below 0x20. Sixteen bytes at a
/// time, then the last eight (overlapping) for the tail.
fn needs_escape(s: &str) -> bool {
    let bytes = s.as_bytes();
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
    if bytes.len() < 8 {
        // Padded with a byte that needs no escape.
        let mut padded = [b'a'; 8];
        padded[..bytes.len()].copy_from_slice(bytes);
        return escapes(u64::from_le_bytes(padded)) != 0;
    }
    let mut at = 0;
    while at + 16 <= bytes.len() {
        if escapes(word(at)) | escapes(word(at + 8)) != 0 {
            return true;
        }
        at += 16;
    }
    if at + 8 <= bytes.len() && escapes(word(at)) != 0 {
        return true;
    }
    escapes(word(bytes.len() - 8)) != 0
}

/// Non-zero if a byte of `v` is `"`, `\` or below 0x20: the classic exact test for a zero byte
/// (`x - 0x01.. & !x & 0x80..`) on `v ^ '"'..` and `v ^ '\'..`, and for a byte below n
/// (`x - n.. & !x & 0x80..`, exact for n ≤ 0x80) on `v`. A byte of 0x80 or above never sets
/// its high bit in `!x`, so UTF-8 passes.
#[inline(always)]
fn escapes(v: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const SPACES: u64 = u64::from_ne_bytes([0x20; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    let quotes = v ^ QUOTES;
    let backslashes = v ^ BACKSLASHES;
    (v.wrapping_sub(SPACES) & !v
        | quotes.wrapping_sub(ONES) & !quotes
        | backslashes.wrapping_sub(ONES) & !backslashes)
        & HIGH
}

/// A string for serde_json's raw-value emitter, which writes it unchanged.
struct Raw<'a>(&'a str);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

/// `"v"`, through serde_json's raw-value path: it writes each field of its raw value as it
/// comes, so the quotes and the text go out without being gathered first.
fn quoted_raw<S: Serializer>(serializer: S, v: &str) -> Result<S::Ok, S::Error> {
    let mut raw = serializer.serialize_struct(RAW, 3)?;
    raw.serialize_field(RAW, &Raw("\""))?;
    raw.serialize_field(RAW, &Raw(v))?;
    raw.serialize_field(RAW, &Raw("\""))?;
    raw.end()
}

/// Whether the serde_json this was built with writes [`quoted_raw`] as a JSON string, checked
/// once per process. The raw-value token and its fields are serde_json's protocol with
/// `RawValue`, not a documented interface: a serde_json that changed them would make the raw
/// path write something else, or fail, so then every string goes through serde_json instead.
fn raw_path_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        let probe = "a probe";
        let mut out = Vec::new();
        let written = quoted_raw(&mut serde_json::Serializer::new(&mut out), probe);
        written.is_ok() && serde_json::to_vec(probe).is_ok_and(|expected| out == expected)
    })
}

/// A serializer (serde_json's, or one of its compound states) whose string values take the
/// fast path.
struct Fast<S>(S);

/// A value to serialise through [`Fast`].
struct Wrap<'a, T: ?Sized>(&'a T);

impl<T: Serialize + ?Sized> Serialize for Wrap<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Fast(serializer))
    }
}

/// A struct's or a struct variant's fields: wrapped, unless the struct is one of serde_json's
/// own.
struct Fields<C> {
    inner: C,
    wrap: bool,
}

impl<S: Serializer> Serializer for Fast<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Fast<S::SerializeSeq>;
    type SerializeTuple = Fast<S::SerializeTuple>;
    type SerializeTupleStruct = Fast<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Fast<S::SerializeTupleVariant>;
    type SerializeMap = Fast<S::SerializeMap>;
    type SerializeStruct = Fields<S::SerializeStruct>;
    type SerializeStructVariant = Fields<S::SerializeStructVariant>;

    fn serialize_str(self, v: &str) -> Result<S::Ok, S::Error> {
        if needs_escape(v) {
            return self.0.serialize_str(v);
        }
        quoted_raw(self.0, v)
    }

    fn serialize_bool(self, v: bool) -> Result<S::Ok, S::Error> {
        self.0.serialize_bool(v)
    }
    fn serialize_i8(self, v: i8) -> Result<S::Ok, S::Error> {
        self.0.serialize_i8(v)
    }
    fn serialize_i16(self, v: i16) -> Result<S::Ok, S::Error> {
        self.0.serialize_i16(v)
    }
    fn serialize_i32(self, v: i32) -> Result<S::Ok, S::Error> {
        self.0.serialize_i32(v)
    }
    fn serialize_i64(self, v: i64) -> Result<S::Ok, S::Error> {
        self.0.serialize_i64(v)
    }
    fn serialize_i128(self, v: i128) -> Result<S::Ok, S::Error> {
        self.0.serialize_i128(v)
    }
    fn serialize_u8(self, v: u8) -> Result<S::Ok, S::Error> {
        self.0.serialize_u8(v)
    }
    fn serialize_u16(self, v: u16) -> Result<S::Ok, S::Error> {
        self.0.serialize_u16(v)
    }
    fn serialize_u32(self, v: u32) -> Result<S::Ok, S::Error> {
        self.0.serialize_u32(v)
    }
    fn serialize_u64(self, v: u64) -> Result<S::Ok, S::Error> {
        self.0.serialize_u64(v)
    }
    fn serialize_u128(self, v: u128) -> Result<S::Ok, S::Error> {
        self.0.serialize_u128(v)
    }
    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        self.0.serialize_f32(v)
    }
    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        self.0.serialize_f64(v)
    }
    fn serialize_char(self, v: char) -> Result<S::Ok, S::Error> {
        self.0.serialize_char(v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<S::Ok, S::Error> {
        self.0.serialize_bytes(v)
    }
    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_none()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Wrap(value))
    }
    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit()
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_struct(name)
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_variant(name, index, variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Wrap(value))
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Wrap(value))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(Fast)
    }
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(Fast)
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(Fast)
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(Fast)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.0.serialize_map(len).map(Fast)
    }
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        let wrap = !name.starts_with(PRIVATE);
        self.0
            .serialize_struct(name, len)
            .map(|inner| Fields { inner, wrap })
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(|inner| Fields { inner, wrap: true })
    }
    // serde_json's own, which escapes as it formats, without an intermediate `String`.
    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.collect_str(value)
    }
    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// The compound states that take values one at a time: each value is wrapped.
macro_rules! wrap_values {
    ($($compound:ident :: $method:ident),+) => {$(
        impl<C: $compound> $compound for Fast<C> {
            type Ok = C::Ok;
            type Error = C::Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
                self.0.$method(&Wrap(value))
            }
            fn end(self) -> Result<C::Ok, C::Error> {
                self.0.end()
            }
        }
    )+};
}

wrap_values!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

// Keys stay serde_json's: its key serializer quotes numbers and refuses what JSON cannot key by.
impl<C: SerializeMap> SerializeMap for Fast<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        self.0.serialize_key(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.0.serialize_value(&Wrap(value))
    }
    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), C::Error> {
        self.0.serialize_entry(key, &Wrap(value))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

/// The compound states that take named fields: wrapped unless serde_json's own.
macro_rules! wrap_fields {
    ($($compound:ident),+) => {$(
        impl<C: $compound> $compound for Fields<C> {
            type Ok = C::Ok;
            type Error = C::Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), C::Error> {
                if self.wrap {
                    self.inner.serialize_field(key, &Wrap(value))
                } else {
                    self.inner.serialize_field(key, value)
                }
            }
            fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
                self.inner.skip_field(key)
            }
            fn end(self) -> Result<C::Ok, C::Error> {
                self.inner.end()
            }
        }
    )+};
}

wrap_fields!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests;
