// The official verdict on each case of a table, and how what sse-hub's model wrote back compares
// with what was published, as a JavaScript client sees both, for the Rust test suite.
//
//   node tests/agui/agree.mjs < cases.json
//
// Input (stdin): a JSON array of {"input": TEXT, "output": TEXT or null}: `input` the event as
// published (JSON text, parsed here with `JSON.parse`, so its numbers are read as a browser
// reads them), `output` what the model wrote back, or null if it refused the event.
// Output (stdout): a JSON array with, per case, {"input": VERDICT, "output": VERDICT or null,
// "equal", "equalWithoutNulls", "sameOrder"}, VERDICT being {"json", "valid", "errors"} from
// `EventSchemas.safeParse` of `@ag-ui/core` 1.0.0:
// * `equal`: the two parse to the same value (numbers compared with `===`, members in any order);
// * `equalWithoutNulls`: the same, once the input's top-level members set to `null` are dropped;
// * `sameOrder`: every object inside the event's members lists its members in the same order
//   (the event's own members are the model's to order).
import { readFileSync } from "node:fs";
import { EventSchemas } from "@ag-ui/core/schemas";

function verdict(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return { json: false, valid: false, errors: [String(error)] };
  }
  const parsed = EventSchemas.safeParse(value);
  return {
    json: true,
    valid: parsed.success,
    errors: parsed.success ? [] : parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`),
  };
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function equal(a, b) {
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => equal(x, b[i]));
  }
  if (isObject(a) || isObject(b)) {
    if (!isObject(a) || !isObject(b)) return false;
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every((k) => Object.hasOwn(b, k) && equal(a[k], b[k]));
  }
  return a === b;
}

// Whether every object in `b` lists its members in the order of the same object in `a`; the
// event itself (depth 0) aside.
function sameOrder(a, b, depth = 0) {
  if (Array.isArray(a)) return Array.isArray(b) && a.every((x, i) => sameOrder(x, b[i], depth + 1));
  if (!isObject(a) || !isObject(b)) return true;
  if (depth > 0 && JSON.stringify(Object.keys(a)) !== JSON.stringify(Object.keys(b))) return false;
  return Object.keys(a).every((k) => sameOrder(a[k], b[k], depth + 1));
}

const cases = JSON.parse(readFileSync(0, "utf8"));
const results = cases.map(({ input, output }) => {
  const result = { input: verdict(input), output: null, equal: false, equalWithoutNulls: false, sameOrder: false };
  if (output == null || !result.input.json) return result;
  result.output = verdict(output);
  const [published, written] = [JSON.parse(input), JSON.parse(output)];
  result.equal = equal(published, written);
  if (isObject(published)) {
    const withoutNulls = Object.fromEntries(Object.entries(published).filter(([, v]) => v !== null));
    result.equalWithoutNulls = equal(withoutNulls, written);
    result.sameOrder = sameOrder(published, written);
  }
  return result;
});
process.stdout.write(JSON.stringify(results) + "\n");
