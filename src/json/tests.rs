//! `to_writer` against serde_json: the same bytes for every shape serde has.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use serde::Serialize;
use serde_json::{Value, json};

use super::{needs_escape, to_vec};

/// Ours must be serde_json's, byte for byte, errors included.
fn same<T: Serialize + ?Sized>(value: &T) {
    match (to_vec(value), serde_json::to_vec(value)) {
        (Ok(ours), Ok(theirs)) => assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        ),
        (Err(ours), Err(theirs)) => assert_eq!(ours.to_string(), theirs.to_string()),
        (ours, theirs) => panic!("ours {ours:?}, serde_json's {theirs:?}"),
    }
}

#[test]
fn the_raw_path_is_taken_with_the_serde_json_built_here() {
    // Otherwise every test here would compare serde_json with itself.
    assert!(super::raw_path_works());
}

#[test]
fn every_escaped_byte_is_found_at_every_position_of_a_word_and_the_tail() {
    for len in 1..=17 {
        for at in 0..len {
            for b in 0u8..0x80 {
                let mut s = vec![b'a'; len];
                s[at] = b;
                let s = String::from_utf8(s).expect("ASCII");
                let expected = b < 0x20 || b == b'"' || b == b'\\';
                assert_eq!(needs_escape(&s), expected, "{s:?}");
                same(&s);
            }
        }
    }
    for s in [
        "",
        "é",
        "€ and 😀",
        "ü\"",
        "\u{7f}",
        "tab\there",
        "日本語のテキスト",
    ] {
        same(s);
    }
}

#[test]
fn no_word_with_an_escaped_byte_is_missed_whatever_its_other_bytes() {
    // Any two bytes at any two places of a word, on backgrounds that sit at the edges of the
    // three tests. The test is exact both ways: a false positive would only cost speed, but
    // there is none to tolerate.
    let escaped = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    for background in [0x00u8, 0x20, 0x5d, 0x80, 0xff, b'a'] {
        for i in 0..8 {
            for j in i..8 {
                for first in 0..=255u8 {
                    for second in 0..=255u8 {
                        let mut word = [background; 8];
                        word[i] = first;
                        word[j] = second;
                        let found = super::escapes(u64::from_le_bytes(word)) != 0;
                        assert_eq!(found, word.iter().any(|&b| escaped(b)), "{word:02x?}");
                    }
                }
            }
        }
    }
}

#[test]
fn an_escape_anywhere_in_a_multibyte_string_of_any_length_is_written_as_serde_json_writes_it() {
    for background in ["a", "é", "\u{FFFF}", "\u{2028}", "😀", "\u{7f}"] {
        for repeat in 0..=40 {
            let base = background.repeat(repeat);
            same(&base);
            for at in (0..=base.len()).filter(|&at| base.is_char_boundary(at)) {
                for escape in ["\"", "\\", "\0", "\u{1f}", "\u{2029}"] {
                    let mut s = base.clone();
                    s.insert_str(at, escape);
                    same(&s);
                }
            }
        }
    }
}

#[test]
fn raw_values_nested_flattened_and_tagged_are_written_as_serde_json_writes_them() {
    use serde_json::value::RawValue;
    #[derive(Serialize)]
    struct Newtype(Box<RawValue>);
    #[derive(Serialize)]
    struct Flat {
        a: String,
        #[serde(flatten)]
        raw: Box<RawValue>,
    }
    #[derive(Serialize)]
    #[serde(tag = "t")]
    enum Internal {
        N(Box<RawValue>),
        S { r: Box<RawValue> },
    }
    #[derive(Serialize)]
    #[serde(tag = "t", content = "c")]
    enum Adjacent {
        N(Box<RawValue>),
    }
    let raw = RawValue::from_string(r#" {"a" : "b\"c"} "#.into()).expect("raw JSON");
    same(&Some(&*raw));
    same(&Option::<&RawValue>::None);
    same(&vec![&raw]);
    same(&BTreeMap::from([("k", raw.clone())]));
    same(&Some(Newtype(raw.clone())));
    same(&Flat {
        a: "x".into(),
        raw: raw.clone(),
    });
    same(&Internal::N(raw.clone()));
    same(&Internal::S { r: raw.clone() });
    same(&Adjacent::N(raw.clone()));
}

#[derive(Serialize)]
struct Unit;
#[derive(Serialize)]
struct Newtype(String);
#[derive(Serialize)]
struct Tuple(u8, String, Option<String>);
#[derive(Serialize)]
enum Variants {
    Unit,
    Newtype(String),
    Tuple(String, i64),
    Struct { a: String, b: Vec<String> },
}
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum Tagged {
    Text { delta: String },
    Nested { inner: Variants },
}
#[derive(Serialize)]
#[serde(untagged)]
enum Untagged {
    Text(String),
    Number(f64),
}
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    message_id: &'a str,
    delta: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    missing: Option<String>,
    chars: Vec<char>,
    bytes: &'a [u8],
    big: (i128, u128),
    floats: Vec<f64>,
    raw: &'a serde_json::value::RawValue,
    unit: Unit,
    newtype: Newtype,
    tuple: Tuple,
    variants: Vec<Variants>,
    tagged: Vec<Tagged>,
    untagged: Vec<Untagged>,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
    by_number: BTreeMap<u32, &'a str>,
    collected: std::net::Ipv4Addr,
}

#[test]
fn every_shape_serde_has_comes_out_as_serde_json_writes_it() {
    let raw =
        serde_json::value::RawValue::from_string(r#"{"kept":"as \"is\"","n":[1,2.5]}"#.into())
            .expect("raw JSON");
    let event = Event {
        message_id: "msg-1",
        delta: "a \"quoted\" line\nand a tab\t, a \\ and \u{1} ü".into(),
        missing: None,
        chars: vec!['a', '"', '\n', 'é', '\u{0}'],
        bytes: b"\x00\xff",
        big: (i128::MIN, u128::MAX),
        floats: vec![0.1, -0.0, 1e300, f64::NAN, f64::INFINITY],
        raw: &raw,
        unit: Unit,
        newtype: Newtype("plain".into()),
        tuple: Tuple(7, "x\"y".into(), None),
        variants: vec![
            Variants::Unit,
            Variants::Newtype("n".into()),
            Variants::Tuple("t\n".into(), -3),
            Variants::Struct {
                a: "s".into(),
                b: vec!["1".into(), "\\2".into()],
            },
        ],
        tagged: vec![
            Tagged::Text {
                delta: "Hel".into(),
            },
            Tagged::Nested {
                inner: Variants::Newtype("deep \"one\"".into()),
            },
        ],
        untagged: vec![Untagged::Text("u".into()), Untagged::Number(2.0)],
        extra: [("flat".to_owned(), json!({"k": ["v", "w\u{7}"]}))].into(),
        by_number: [(1, "one"), (20, "twenty \"2\"")].into(),
        collected: std::net::Ipv4Addr::LOCALHOST,
    };
    same(&event);
    same(&json!({"a": [null, true, 1, -1, 1.5, "s", {"b\"key": "v"}], "": ""}));
    same(&Some("some"));
    same(&Option::<String>::None);
}

#[test]
fn keys_json_cannot_have_are_refused_as_serde_json_refuses_them() {
    let mut map = HashMap::new();
    map.insert(vec![1u8], "value");
    same(&map);
    same(&BTreeMap::from([((1, 2), "tuple key")]));
}

#[test]
fn every_agui_event_of_the_model_is_written_as_serde_json_writes_it() {
    use crate::models::AgUiEvent;
    for json in [
        json!({"type": "RUN_STARTED", "threadId": "t", "runId": "r",
               "input": {"threadId": "t", "runId": "r", "messages": [{"id": "u1", "role": "user", "content": "Weather?\n"}],
                         "tools": [], "context": [], "state": {"n": 1}, "forwardedProps": {}}}),
        json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": " \"mild\"\n"}),
        json!({"type": "TOOL_CALL_ARGS", "toolCallId": "c", "delta": "{\"city\":"}),
        json!({"type": "STATE_DELTA", "delta": [{"op": "add", "path": "/a~1b", "value": "x"}]}),
        json!({"type": "SOMETHING_NEWER", "payload": {"k": "v"}}),
    ] {
        let event: AgUiEvent = serde_json::from_value(json).expect("an AG-UI event");
        same(&event);
    }
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_string_is_written_as_serde_json_writes_it(s in any::<String>()) {
        let escaped = s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
        prop_assert_eq!(needs_escape(&s), escaped);
        same(&s);
    }

    #[test]
    fn any_json_value_is_written_as_serde_json_writes_it(v in value()) {
        same(&v);
    }
}
