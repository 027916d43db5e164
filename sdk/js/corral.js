// corral.js: write Corral plugins in JavaScript (an ES module, for componentize-js).
//
// A Corral plugin is a WebAssembly component built against Corral's WIT contract
// (`wit/`); componentize-js turns an ES module into one. This module hides the
// bindings: declare the plugin with `agent`, `tools` or `connector` and export it
// under the WIT interface's name.
//
//   import * as corral from "./corral.js";
//
//   export const agent = corral.agent({
//     name: "hello", version: "0.1.0", description: "Greets whoever it is given.",
//     input: { type: "object", properties: { name: { type: "string", default: "world" } } },
//     run(ctx, input) {
//       corral.progress(50, "greeting");
//       corral.info(`greeting ${input.name} (attempt ${ctx.attempt})`);
//       return { greeting: `Hello, ${input.name}!` };
//     },
//   });
//
// Build: `componentize-js --wit wit --world-name agent-plugin -o hello.wasm app.js`.
//
// What it covers:
// - `agent`, `tools`, `connector`: `describe()` / `listTools()` are built from the
//   declaration; the `input` (and tool `input`) JSON Schema is the type: the input is
//   checked against it (type, required, properties, items, enum, const, minimum /
//   maximum, minLength / maxLength, minItems / maxItems, anyOf) and defaults are
//   filled in before `run` sees it; a mismatch is answered with `invalid-input`
//   naming the field, before your code runs.
// - Errors are exceptions: throw `Transient`, `Permanent` or `InvalidInput` (with an
//   optional `detail` for a feedback loop); any other exception becomes
//   `permanent("internal error: ...")` and its stack is logged, so the plugin never
//   traps on a bug.
// - Host functions: `log` / `trace` / `debug` / `info` / `warn` / `error`, `progress`,
//   `callTool`, `putArtifact`, `ask`, `waitForWebhook`, `state` (`get` / `set` /
//   `getJson` / `setJson`) and `connectorConfig`; host errors are thrown as the
//   exceptions above.
// - Language models through the host (contract 0.2.0):
//   `model("fast").chat(messages, { tools, maxTokens, temperature, stop, responseSchema })`
//   returns `{ content, toolCalls, finishReason, usage: { inputTokens, outputTokens },
//   cached }`. The alias must be granted (`[grants] models = ["fast"]` in corral.toml);
//   otherwise it throws `Permanent("not granted: model `fast` ...")`. A request over the
//   host's bounds (256 messages, 1 MiB of text, 64 tools, 64 KiB a schema, 4 stop
//   sequences, temperature 0 to 2) throws `InvalidInput` and nothing is sent; one that
//   cannot fit the token budget is refused with `BUDGET_EXHAUSTED`. See `wit/model.wit`.
// Not covered: outbound HTTP (the Rust SDK's `http` feature).

import {
  log as hostLog,
  progress as hostProgress,
  callTool as hostCallTool,
  putArtifact as hostPutArtifact,
  ask as hostAsk,
  stateGet,
  stateSet,
} from "corral:plugin/host@0.2.0";
import { chat as modelChat } from "corral:plugin/model@0.2.0";

export const VERSION = "0.1.0";
const DIALECT = "https://json-schema.org/draft/2020-12/schema";

// ---- errors ----

/** A failure the plugin reports to the host. Throw one of its subclasses. */
export class PluginError extends Error {
  constructor(message, detail) {
    super(String(message));
    this.detail = detail;
  }
  /** The WIT variant: transient, permanent or invalid-input. */
  get code() {
    return "permanent";
  }
  /** The message as it crosses the boundary (JSON when there is detail). */
  wireMessage() {
    return this.detail === undefined
      ? this.message
      : JSON.stringify({ message: this.message, detail: this.detail });
  }
}

/** May succeed if tried again: the host retries the step with backoff. */
export class Transient extends PluginError {
  get code() {
    return "transient";
  }
}

/** Will fail again on retry: never retried. */
export class Permanent extends PluginError {
  get code() {
    return "permanent";
  }
}

/** The input or arguments were not acceptable: never retried. */
export class InvalidInput extends PluginError {
  get code() {
    return "invalid-input";
  }
}

// What the bindings expect a failing export to throw: an object whose `payload` is
// the `plugin-error` variant.
function toWit(e) {
  return { payload: { tag: e.code, val: e.wireMessage() } };
}

function fromWit(e) {
  const v = e && Object.prototype.hasOwnProperty.call(e, "payload") ? e.payload : e;
  const message = v && typeof v === "object" && "val" in v ? String(v.val) : String(v);
  const tag = v && typeof v === "object" ? v.tag : undefined;
  if (tag === "transient") return new Transient(message);
  if (tag === "invalid-input") return new InvalidInput(message);
  return new Permanent(message);
}

function hostCall(fn, ...args) {
  try {
    return fn(...args);
  } catch (e) {
    throw fromWit(e);
  }
}

function guard(body) {
  try {
    return body();
  } catch (e) {
    if (e instanceof PluginError) throw toWit(e);
    const name = (e && e.name) || "Error";
    const message = e && e.message !== undefined ? e.message : String(e);
    try {
      error(e && e.stack ? `${name}: ${message}\n${e.stack}` : `${name}: ${message}`);
    } catch (_) {
      // logging must not hide the failure
    }
    throw toWit(new Permanent(`internal error: ${name}: ${message}`));
  }
}

// ---- JSON: parse, encode, check against a schema ----

function parse(text, what, Err = InvalidInput) {
  if (text === undefined || text === null) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Err(`${what} is not valid JSON: ${e.message}`);
  }
}

function dump(value, what) {
  const text = JSON.stringify(value === undefined ? null : value);
  if (text === undefined) throw new Permanent(`${what} is not JSON`);
  return text;
}

function typeOf(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

const NAMES = {
  object: "an object",
  array: "an array",
  string: "a string",
  boolean: "a boolean",
  integer: "an integer",
  number: "a number",
  null: "null",
};

function where(path) {
  return path ? `"${path}"` : "the input";
}

function fits(type, v) {
  const t = typeOf(v);
  return t === type || (type === "number" && t === "integer");
}

/**
 * Checks `value` against the JSON Schema `schema` (the subset listed above) and
 * returns it with defaults filled in; throws `InvalidInput` naming the first
 * field that does not fit.
 */
export function check(schema, value, path = "") {
  if (!schema || typeof schema !== "object") return value;
  if (Array.isArray(schema.anyOf)) {
    const errors = [];
    for (const s of schema.anyOf) {
      try {
        return check(s, value, path);
      } catch (e) {
        if (!(e instanceof InvalidInput)) throw e;
        errors.push(e.message);
      }
    }
    throw new InvalidInput(`${where(path)} fits none of its types (${errors.join("; ")})`);
  }
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.some((t) => fits(t, value))) {
      const expected = types.map((t) => NAMES[t] || t).join(" or ");
      throw new InvalidInput(
        `${where(path)} must be ${expected}, got ${NAMES[typeOf(value)]}`,
      );
    }
  }
  if (Array.isArray(schema.enum) && !schema.enum.some((e) => JSON.stringify(e) === JSON.stringify(value))) {
    throw new InvalidInput(
      `${where(path)} must be one of ${JSON.stringify(schema.enum)}, got ${JSON.stringify(value)}`,
    );
  }
  if ("const" in schema && JSON.stringify(schema.const) !== JSON.stringify(value)) {
    throw new InvalidInput(`${where(path)} must be ${JSON.stringify(schema.const)}`);
  }
  if (typeof value === "number") {
    if (schema.minimum !== undefined && value < schema.minimum)
      throw new InvalidInput(`${where(path)} must be at least ${schema.minimum}, got ${value}`);
    if (schema.maximum !== undefined && value > schema.maximum)
      throw new InvalidInput(`${where(path)} must be at most ${schema.maximum}, got ${value}`);
  }
  if (typeof value === "string") {
    const n = [...value].length;
    if (schema.minLength !== undefined && n < schema.minLength)
      throw new InvalidInput(`${where(path)} must have at least ${schema.minLength} characters`);
    if (schema.maxLength !== undefined && n > schema.maxLength)
      throw new InvalidInput(`${where(path)} must have at most ${schema.maxLength} characters`);
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems)
      throw new InvalidInput(`${where(path)} must have at least ${schema.minItems} items`);
    if (schema.maxItems !== undefined && value.length > schema.maxItems)
      throw new InvalidInput(`${where(path)} must have at most ${schema.maxItems} items`);
    if (schema.items) return value.map((v, i) => check(schema.items, v, `${path}[${i}]`));
  }
  if (typeOf(value) === "object") {
    const out = { ...value };
    const props = schema.properties || {};
    for (const key of schema.required || []) {
      if (!(key in out) && !(props[key] && "default" in props[key])) {
        throw new InvalidInput(`missing required field "${path ? `${path}.${key}` : key}"`);
      }
    }
    for (const [key, sub] of Object.entries(props)) {
      const p = path ? `${path}.${key}` : key;
      if (key in out) out[key] = check(sub, out[key], p);
      else if (sub && "default" in sub) out[key] = structuredCloneJson(sub.default);
    }
    if (schema.additionalProperties && typeof schema.additionalProperties === "object") {
      for (const key of Object.keys(out)) {
        if (!(key in props)) out[key] = check(schema.additionalProperties, out[key], path ? `${path}.${key}` : key);
      }
    }
    return out;
  }
  return value;
}

function structuredCloneJson(v) {
  return v === undefined ? undefined : JSON.parse(JSON.stringify(v));
}

function withDialect(schema) {
  return schema ? JSON.stringify({ $schema: DIALECT, ...schema }) : undefined;
}

// ---- agents ----

/**
 * Declares an agent: `{name, version, description, input?, output?, run(ctx, input)}`.
 * `input` / `output` are JSON Schemas; export the result as `agent`:
 * `export const agent = corral.agent({...})`.
 * `ctx` is `{runId, step, attempt, config, feedback}` with `config` and `feedback`
 * parsed from JSON.
 */
export function agent(spec) {
  const { name, version, description, input, output, run } = spec;
  if (typeof run !== "function") throw new TypeError("agent: `run(ctx, input)` is required");
  const info = {
    name: String(name),
    version: String(version),
    description: String(description || ""),
    inputSchema: withDialect(input),
    outputSchema: withDialect(output),
  };
  return {
    describe() {
      return info;
    },
    run(ctx, text) {
      return guard(() => {
        const context = {
          runId: ctx.runId,
          step: ctx.step,
          attempt: ctx.attempt,
          config: parse(ctx.config, "the step config", Permanent) ?? {},
          feedback: parse(ctx.feedback, "the feedback", Permanent),
        };
        const value = check(input, parse(text, "the input"));
        return dump(run(context, value), "the output");
      });
    },
  };
}

// ---- tools ----

/**
 * Declares a tool plugin: an object mapping each tool's name to
 * `{description, input (a JSON Schema for the arguments object), call(args)}`.
 * Export the result as `tool`: `export const tool = corral.tools({...})`.
 */
export function tools(defs) {
  const specs = Object.entries(defs).map(([name, d]) => ({
    name,
    description: String(d.description || ""),
    inputSchema: withDialect(d.input || { type: "object" }),
  }));
  return {
    listTools() {
      return specs;
    },
    call(name, argsText) {
      return guard(() => {
        const d = Object.prototype.hasOwnProperty.call(defs, name) ? defs[name] : undefined;
        if (!d) throw new InvalidInput(`no tool named ${JSON.stringify(name)}`);
        const args = parse(argsText, "the arguments");
        if (typeOf(args) !== "object") throw new InvalidInput("the arguments must be a JSON object");
        return dump(d.call(check(d.input, args)), "the result");
      });
    },
  };
}

// ---- connectors ----

/**
 * Declares a connector: `{name, version, description, pull(query, cursor), push?(items),
 * handleWebhook?(request)}`. `pull` returns `{items, nextCursor?}` (or an array of
 * items); `request` is `{headers: [[name, value]], body: Uint8Array, text(), json()}`.
 * Export the result as `connector`.
 */
export function connector(spec) {
  const info = {
    name: String(spec.name),
    version: String(spec.version),
    description: String(spec.description || ""),
  };
  return {
    describe() {
      return info;
    },
    pull(query, cursor) {
      return guard(() => {
        let page = spec.pull(parse(query, "the query"), cursor ?? undefined);
        if (Array.isArray(page)) page = { items: page };
        return {
          items: (page.items || []).map((i) => dump(i, "an item")),
          nextCursor: page.nextCursor ?? undefined,
        };
      });
    },
    push(items) {
      return guard(() => {
        if (!spec.push) throw new Permanent("this connector does not support push");
        return spec.push(items.map((i) => parse(i, "an item"))) >>> 0;
      });
    },
    handleWebhook(request) {
      return guard(() => {
        if (!spec.handleWebhook) throw new Permanent("this connector does not handle webhooks");
        const body = request.body;
        const req = {
          headers: request.headers,
          body,
          header(n) {
            const h = request.headers.find(([k]) => k === String(n).toLowerCase());
            return h ? h[1] : undefined;
          },
          text() {
            return new TextDecoder().decode(body);
          },
          json() {
            return parse(new TextDecoder().decode(body), "the webhook body");
          },
        };
        return spec.handleWebhook(req).map((i) => dump(i, "an item"));
      });
    },
  };
}

// ---- host functions ----

const LEVELS = new Set(["trace", "debug", "info", "warn", "error"]);

/** Writes a log line; `level` is trace, debug, info, warn or error. */
export function log(level, message) {
  hostLog(LEVELS.has(level) ? level : "info", String(message));
}
export const trace = (m) => log("trace", m);
export const debug = (m) => log("debug", m);
export const info = (m) => log("info", m);
export const warn = (m) => log("warn", m);
export const error = (m) => log("error", m);

/** Reports how far the current step has come, 0 to 100. */
export function progress(percent, label = "") {
  const p = Math.max(0, Math.min(100, Math.round(Number(percent) || 0)));
  hostProgress(p, String(label));
}

/** Calls a tool granted to this step and returns its JSON result. */
export function callTool(name, args = {}) {
  const out = hostCall(hostCallTool, String(name), dump(args, "the tool arguments"));
  return parse(out, `tool ${name}'s result`, Permanent);
}

/**
 * Stores an artifact for the run and returns its id. `content` is a Uint8Array,
 * a string (UTF-8) or any JSON value (stored as application/json).
 */
export function putArtifact(name, content, mediaType) {
  let data;
  let fallback;
  if (content instanceof Uint8Array) {
    data = content;
    fallback = "application/octet-stream";
  } else if (typeof content === "string") {
    data = new TextEncoder().encode(content);
    fallback = "text/plain; charset=utf-8";
  } else {
    data = new TextEncoder().encode(dump(content, "the artifact"));
    fallback = "application/json";
  }
  return hostCall(hostPutArtifact, String(name), mediaType || fallback, data);
}

/** Asks a person a question (optionally with a JSON Schema for the answer) and waits. */
export function ask(question, answerSchema) {
  const schema = answerSchema === undefined ? undefined : JSON.stringify(answerSchema);
  return parse(hostCall(hostAsk, String(question), schema), "the answer", Permanent);
}

/** Waits until webhook `name` receives a delivery (a durable wait, like `ask`). */
export function waitForWebhook(name) {
  return ask(`webhook:${name}`);
}

/** The config of a connector step (handed over in the run state). */
export function connectorConfig(schema) {
  const raw = stateGet("corral.config");
  if (raw === undefined || raw === null) {
    throw new Permanent("no step config: a connector gets one when it runs as a pipeline step");
  }
  return check(schema, parse(new TextDecoder().decode(raw), "the step's config"), "config");
}

/** Per-run state shared by all steps of a run. */
export const state = {
  get(key) {
    const v = stateGet(String(key));
    return v === undefined || v === null ? undefined : v;
  },
  set(key, bytes) {
    hostCall(stateSet, String(key), bytes);
  },
  getJson(key, fallback) {
    const v = this.get(key);
    return v === undefined ? fallback : parse(new TextDecoder().decode(v), `state ${key}`, Permanent);
  },
  setJson(key, value) {
    this.set(key, new TextEncoder().encode(dump(value, `state ${key}`)));
  },
};

// ---- language models (corral:plugin/model) ----

const ROLES = new Set(["system", "user", "assistant", "tool"]);

function witCall(c) {
  const args = c.arguments === undefined ? "{}" : c.arguments;
  return {
    id: String(c.id ?? ""),
    name: String(c.name ?? ""),
    arguments: typeof args === "string" ? args : dump(args, "tool-call arguments"),
  };
}

function witMessage(m, i) {
  const role = String(m.role ?? "user");
  if (!ROLES.has(role)) {
    throw new InvalidInput(`message ${i}: role must be one of system, user, assistant, tool, not ${role}`);
  }
  return {
    role,
    content: String(m.content ?? ""),
    toolCalls: (m.toolCalls || []).map(witCall),
    toolCallId: m.toolCallId === undefined || m.toolCallId === null ? undefined : String(m.toolCallId),
  };
}

function witTool(t) {
  const params = t.parameters ?? { type: "object" };
  return {
    name: String(t.name ?? ""),
    description: String(t.description ?? ""),
    parameters: typeof params === "string" ? params : dump(params, "tool parameters"),
  };
}

/** A model alias (`fast`, `smart`) the operator maps to a provider; see `model`. */
export class Model {
  constructor(alias) {
    this.alias = String(alias);
  }

  /**
   * Sends the conversation and waits for the whole answer. `messages` are
   * `{ role, content, toolCalls?, toolCallId? }` (role system, user, assistant or tool);
   * `tools` are `{ name, description, parameters }` (a JSON Schema object). Returns
   * `{ content, toolCalls: [{ id, name, arguments, parseArguments() }], finishReason
   * ("stop", "length", "tool-calls", "content-filter", "other"), usage: { inputTokens,
   * outputTokens }, cached, message() }`; `message()` is the answer as an assistant
   * message to append before the tool results. Host errors are thrown as `Transient`,
   * `Permanent` or `InvalidInput`.
   */
  chat(messages, options = {}) {
    const { tools = [], maxTokens, temperature, stop = [], responseSchema } = options;
    const request = {
      messages: messages.map(witMessage),
      tools: tools.map(witTool),
      maxTokens: maxTokens === undefined || maxTokens === null ? undefined : Number(maxTokens),
      temperature: temperature === undefined || temperature === null ? undefined : Number(temperature),
      stop: stop.map(String),
      responseSchema:
        responseSchema === undefined || responseSchema === null
          ? undefined
          : typeof responseSchema === "string"
            ? responseSchema
            : dump(responseSchema, "the response schema"),
    };
    const r = hostCall(modelChat, this.alias, request);
    const toolCalls = r.toolCalls.map((c) => ({
      id: c.id,
      name: c.name,
      arguments: c.arguments,
      parseArguments() {
        return parse(c.arguments, `the model's arguments for ${c.name}`);
      },
    }));
    return {
      content: r.content,
      toolCalls,
      finishReason: r.finishReason,
      usage: { inputTokens: Number(r.usage.inputTokens), outputTokens: Number(r.usage.outputTokens) },
      cached: Boolean(r.cached),
      message() {
        return { role: "assistant", content: r.content, toolCalls: toolCalls.map(witCall) };
      },
    };
  }
}

/** The model the operator maps to `alias`: `model("fast").chat(messages)`. */
export function model(alias) {
  return new Model(alias);
}
