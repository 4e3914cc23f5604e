#!/usr/bin/env node
// The judge of sse-hub's AG-UI streams: feeds the raw SSE bytes that connections received into
// the official client's own pipeline and prints what the client ended with.
//
// Usage: node judge.mjs [--client 1.0.0|0.0.59] < input.json
//
// Input (stdin, JSON): {"clients": [[conn, conn, ...], ...]}. Each client is ONE agent (a
// subclass of the client's `AbstractAgent`) and each connection is the text a connection
// received; the agent handles them one after the other with one `connectAgent()` each, the way
// the client handles a reconnect (messages and state carry over, the run is validated from
// zero). The bytes go through the client's own `transformHttpEventStream` (its SSE parser
// `parseSSEStream`, then for 0.0.59 its schema validation), then `connectAgent`'s
// enforcement, chunk transformation, verification and `defaultApplyEvents`.
//
// Output (stdout, JSON): {"client": version, "results": [{"messages", "state", "errors",
// "warnings"}, ...]}, one result per client, in order. `errors` holds every error a
// `connectAgent` threw and every `console.error`; `warnings` every `console.warn`.

import { readFileSync } from "node:fs";
import { asyncScheduler, scheduled } from "rxjs";

const args = process.argv.slice(2);
let version = "1.0.0";
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--client") version = args[++i];
  else if (args[i].startsWith("--client=")) version = args[i].slice("--client=".length);
}
const packages = { "1.0.0": "@ag-ui/client", "0.0.59": "ag-ui-client-0059" };
if (!packages[version]) {
  console.error(`unknown client version ${version}: expected one of ${Object.keys(packages).join(", ")}`);
  process.exit(2);
}
const client = await import(packages[version]);
const { AbstractAgent, transformHttpEventStream } = client;

const input = JSON.parse(readFileSync(0, "utf8"));
const clients = input.clients ?? [];

// Everything the client says on the console during a connection is captured per client.
let sink = null;
const original = { warn: console.warn, error: console.error };
const render = (parts) =>
  parts.map((p) => (p instanceof Error ? `${p.name}: ${p.message}` : typeof p === "string" ? p : JSON.stringify(p))).join(" ");
console.warn = (...parts) => (sink ? sink.warnings.push(render(parts)) : original.warn(...parts));
console.error = (...parts) => (sink ? sink.errors.push(render(parts)) : original.error(...parts));

// Split into chunks that cut frames (and UTF-8 sequences) anywhere, as a network would.
const CHUNK = 997;
const encoder = new TextEncoder();
function httpEvents(text) {
  const bytes = encoder.encode(text);
  const events = [
    { type: "headers", status: 200, headers: new Headers({ "content-type": "text/event-stream" }) },
  ];
  for (let i = 0; i < bytes.length; i += CHUNK) {
    events.push({ type: "data", data: bytes.slice(i, i + CHUNK) });
  }
  return events;
}

class ReplayAgent extends AbstractAgent {
  constructor(connections) {
    super({ threadId: "judge-thread" });
    this.connections = connections;
    this.next = 0;
  }
  connect(_input) {
    const text = this.connections[this.next++];
    // Asynchronous, as a network is: the parser subscribes to its source before it hands back its
    // output, so a synchronous source would be drained before anyone listens.
    return transformHttpEventStream(scheduled(httpEvents(text), asyncScheduler));
  }
  run(_input) {
    throw new Error("the judge only connects");
  }
}

const results = [];
for (const connections of clients) {
  const result = { messages: [], state: {}, errors: [], warnings: [] };
  sink = result;
  const agent = new ReplayAgent(connections);
  for (let i = 0; i < connections.length; i++) {
    try {
      await agent.connectAgent();
    } catch (err) {
      result.errors.push(`connection ${i}: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
    }
  }
  sink = null;
  result.messages = agent.messages;
  result.state = agent.state;
  results.push(result);
}

process.stdout.write(JSON.stringify({ client: version, results }));
