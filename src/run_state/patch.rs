//! JSON Patch (RFC 6902) as the official client applies it (`fast-json-patch`'s `applyPatch`),
//! for `STATE_DELTA` and `ACTIVITY_DELTA`.
//!
//! `json_patch::patch` undoes the operations already applied when a later one fails, and
//! panics (`unreachable!`) when it cannot: a `move` of a value into its own parent (`/a/b` to
//! `/a`) cannot be undone. A valid patch from a producer must never panic the fold, which runs
//! under the channel lock. The fold does not need the undo anyway: a failed `STATE_DELTA` makes
//! the state unknown (the document is dropped), and a failed `ACTIVITY_DELTA` was applied to a
//! copy of the activity's content (which is dropped). So the patch is applied with
//! [`json_patch::patch_unsafe`], which never undoes, and the caller drops the document on
//! `Err`.

use json_patch::Patch;
use serde::Deserialize;
use serde_json::Value;

/// Why a patch did not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failed;

/// Applies `patch` (the JSON of a patch) to `doc`, in place. On `Err` the document may be
/// partly patched: the caller must drop it (see the module docs).
pub(crate) fn apply(doc: &mut Value, patch: &Value) -> Result<(), Failed> {
    let Patch(ops) = Patch::deserialize(patch).map_err(|_| Failed)?;
    json_patch::patch_unsafe(doc, &ops).map_err(|_| Failed)
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
