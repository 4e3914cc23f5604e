//! JSON Patch (RFC 6902) as the official client applies it (`fast-json-patch`'s `applyPatch`),
//! for `STATE_DELTA` and `ACTIVITY_DELTA`.
//!
//! Two differences from `json_patch::patch` matter here:
//!
//! * **No undo, so no panic.** `json_patch::patch` undoes the operations already applied when
//!   a later one fails, and panics (`unreachable!`) when it cannot: a `move` of a value into
//!   its own parent (`/a/b` to `/a`) cannot be undone. A valid patch from a producer must never
//!   panic the fold, which runs under the channel lock. The fold does not need the undo
//!   anyway: a failed `STATE_DELTA` makes the state unknown (the document is dropped), and a
//!   failed `ACTIVITY_DELTA` was applied to a copy of the activity's content (which is
//!   dropped). So the operations are applied with [`json_patch::patch_unsafe`], which never
//!   undoes, and the caller drops the document on `Err`.
//! * **`test` compares numbers by value.** The client's `test` is `fast-json-patch`'s deep
//!   equality, where every JSON number is a double: `1` equals `1.0`. `serde_json::Value`'s
//!   equality tells the integer `1` from the float `1.0`, which would fail a `test` that every
//!   client passes (a Python producer writes `1.0` for a float that happens to be whole) and
//!   make the state unknown. So `test` operations are checked here, the others applied by
//!   `json_patch`.

use json_patch::{Patch, PatchOperation};
use serde::Deserialize;
use serde_json::Value;

/// Why a patch did not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failed;

/// Applies `patch` (the JSON of a patch) to `doc`, in place. On `Err` the document may be
/// partly patched: the caller must drop it (see the module docs).
pub(crate) fn apply(doc: &mut Value, patch: &Value) -> Result<(), Failed> {
    let Patch(ops) = Patch::deserialize(patch).map_err(|_| Failed)?;
    for op in &ops {
        match op {
            PatchOperation::Test(test) => {
                let target = doc.pointer(test.path.as_str()).ok_or(Failed)?;
                if !js_equal(target, &test.value) {
                    return Err(Failed);
                }
            }
            other => {
                json_patch::patch_unsafe(doc, std::slice::from_ref(other)).map_err(|_| Failed)?;
            }
        }
    }
    Ok(())
}

/// `fast-json-patch`'s `_areEquals`: deep equality, numbers compared as doubles (as every JSON
/// number is one in JavaScript).
fn js_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| js_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| js_equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_move_into_its_parent_then_a_failure_is_an_error_not_a_panic() {
        let mut doc = json!({"a":{"b":{"c":1}}});
        let patch = json!([
            {"op":"move","from":"/a/b","path":"/a"},
            {"op":"test","path":"/missing","value":0}
        ]);
        assert_eq!(apply(&mut doc, &patch), Err(Failed));
    }

    #[test]
    fn test_compares_numbers_by_value_deeply() {
        let mut doc = json!({"p":1.0,"l":[1,{"x":2.0}]});
        let patch = json!([
            {"op":"test","path":"/p","value":1},
            {"op":"test","path":"/l","value":[1.0,{"x":2}]},
            {"op":"replace","path":"/p","value":2}
        ]);
        assert_eq!(apply(&mut doc, &patch), Ok(()));
        assert_eq!(doc, json!({"p":2,"l":[1,{"x":2.0}]}));
        for wrong in [json!(2.5), json!("2"), json!([2])] {
            let patch = json!([{"op":"test","path":"/p","value":wrong}]);
            assert_eq!(apply(&mut doc, &patch), Err(Failed), "{wrong}");
        }
        let patch = json!([{"op":"test","path":"/l","value":[1,{"x":2,"y":0}]}]);
        assert_eq!(apply(&mut doc, &patch), Err(Failed));
    }

    #[test]
    fn what_is_not_a_patch_fails() {
        let mut doc = json!({});
        for bad in [
            json!({}),
            json!([{"op":"nope"}]),
            json!([{"op":"add","path":"x","value":1}]),
        ] {
            assert_eq!(apply(&mut doc, &bad), Err(Failed), "{bad}");
        }
    }
}
