// Validates AG-UI events with the official schemas of @ag-ui/core 1.0.0 (the authority on what
// an AG-UI 1.0 event is), for the Rust test suite.
//
//   node tests/agui/validate.mjs [FILE]       # FILE, or standard input
//
// Input: a JSON array of events, or one JSON event per line. Output (standard output): one JSON
// array with, per event in order, {"index", "type", "valid", "errors"}: `errors` lists zod's
// issues as {"path", "message"}. Exits 0 when the input could be read (whatever the verdicts),
// 2 when it could not.
import { readFileSync } from "node:fs";
import { EventSchemas, PROTOCOL_VERSION } from "@ag-ui/core/schemas";

function readInput() {
  const file = process.argv[2];
  const text = readFileSync(file ?? 0, "utf8").trim();
  if (text.startsWith("[")) return JSON.parse(text);
  return text.split("\n").filter((line) => line.trim() !== "").map((line) => JSON.parse(line));
}

let events;
try {
  events = readInput();
} catch (error) {
  process.stderr.write(`cannot read the events: ${error.message}\n`);
  process.exit(2);
}

const results = events.map((event, index) => {
  const parsed = EventSchemas.safeParse(event);
  return {
    index,
    type: event?.type ?? null,
    valid: parsed.success,
    errors: parsed.success
      ? []
      : parsed.error.issues.map((issue) => ({ path: issue.path.join("."), message: issue.message })),
  };
});
process.stdout.write(JSON.stringify({ protocolVersion: PROTOCOL_VERSION, results }) + "\n");
