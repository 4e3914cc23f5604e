//! A thread state for the tests: remembers every `n` folded, and opens with one frame
//! `{"seen":[...]}`. Events without `n` are ignored; `{"fail":true}` cannot be applied;
//! `{"trim":true}` forgets everything (a state that trimmed itself to its cap);
//! `{"panic":true}` panics (a caller's state with a bug).

use serde_json::{Value, json};
use sse_hub::{Folded, ThreadId, ThreadState, ThreadStates};

/// The state of one thread: the `n`s folded, in order.
#[derive(Debug, Default)]
pub struct Seen(pub Vec<u64>);

impl ThreadState for Seen {
    fn fold(&mut self, data: &[u8]) -> Folded {
        let value: Value = serde_json::from_slice(data).unwrap();
        // What a real state reports when an event does not apply, or when it trimmed itself.
        if value["fail"] == true {
            return Folded::Unknown;
        }
        if value["trim"] == true {
            self.0.clear();
            return Folded::Trimmed;
        }
        assert!(value["panic"] != true, "the state panics");
        match value["n"].as_u64() {
            Some(n) => {
                self.0.push(n);
                Folded::Applied
            }
            None => Folded::Ignored,
        }
    }

    fn write_opening(&self, out: &mut Vec<u8>) {
        if self.0.is_empty() {
            return;
        }
        out.extend_from_slice(b"data: ");
        serde_json::to_writer(&mut *out, &json!({ "seen": self.0 })).unwrap();
        out.extend_from_slice(b"\n\n");
    }

    fn bytes(&self) -> usize {
        self.0.len() * 8
    }
}

/// Makes a [`Seen`] for every thread.
#[derive(Debug)]
pub struct SeenStates;

impl ThreadStates for SeenStates {
    fn create(&self, _thread: &ThreadId) -> Box<dyn ThreadState> {
        Box::new(Seen::default())
    }
}
