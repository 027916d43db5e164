// corral.js under plain Node with fake bindings:
// `node --import ./test/register.mjs --test test/` from sdk/js.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as corral from "../corral.js";

const ctx = { runId: "r1", step: "s1", attempt: 2, config: '{"a":1}', feedback: undefined };
const schema = {
  type: "object",
  properties: {
    name: { type: "string", minLength: 1 },
    times: { type: "integer", minimum: 1, maximum: 3, default: 1 },
    tags: { type: "array", items: { type: "string" } },
    mood: { enum: ["happy", "sad"] },
  },
  required: ["name"],
};

function witError(fn) {
  try {
    fn();
  } catch (e) {
    assert.ok(Object.hasOwn(e, "payload"), `not a WIT error: ${e}`);
    return e.payload;
  }
  assert.fail("did not throw");
}

test("check fills defaults and names the field that does not fit", () => {
  assert.deepEqual(corral.check(schema, { name: "Ada" }), { name: "Ada", times: 1 });
  for (const [value, message] of [
    [{}, 'missing required field "name"'],
    [{ name: 5 }, '"name" must be a string, got an integer'],
    [{ name: "" }, '"name" must have at least 1 characters'],
    [{ name: "a", times: 1.5 }, '"times" must be an integer, got a number'],
    [{ name: "a", times: 9 }, '"times" must be at most 3, got 9'],
    [{ name: "a", tags: ["x", 1] }, '"tags[1]" must be a string'],
    [{ name: "a", mood: "meh" }, '"mood" must be one of ["happy","sad"]'],
    [[], "the input must be an object, got an array"],
  ]) {
    assert.throws(() => corral.check(schema, value), (e) => e instanceof corral.InvalidInput && e.message.includes(message), message);
  }
});

test("an agent describes itself from its declaration and maps errors", () => {
  globalThis.hostCalls.length = 0;
  const a = corral.agent({
    name: "greet", version: "1.0.0", description: "Greets.", input: schema,
    run(c, input) {
      corral.progress(150, "half");
      corral.info(`hi ${input.name} ${c.attempt} ${c.config.a}`);
      if (input.name === "boom") throw new TypeError("kaboom");
      if (input.name === "again") throw new corral.Transient("later", { n: 1 });
      return { greeting: `Hello, ${input.name}`, times: input.times };
    },
  });
  const info = a.describe();
  assert.equal(info.name, "greet");
  assert.deepEqual(JSON.parse(info.inputSchema).required, ["name"]);
  assert.equal(info.outputSchema, undefined);
  assert.equal(globalThis.hostCalls.length, 0, "describe must not call the host");

  assert.deepEqual(JSON.parse(a.run(ctx, '{"name":"Ada"}')), { greeting: "Hello, Ada", times: 1 });
  assert.deepEqual(globalThis.hostCalls, [["progress", 100, "half"], ["log", "info", "hi Ada 2 1"]]);

  assert.deepEqual(witError(() => a.run(ctx, '{"name":5}')).tag, "invalid-input");
  assert.equal(witError(() => a.run(ctx, "nope")).tag, "invalid-input");
  assert.deepEqual(witError(() => a.run(ctx, '{"name":"again"}')), {
    tag: "transient", val: '{"message":"later","detail":{"n":1}}',
  });
  assert.deepEqual(witError(() => a.run(ctx, '{"name":"boom"}')), {
    tag: "permanent", val: "internal error: TypeError: kaboom",
  });
  assert.ok(globalThis.hostCalls.some(([n, lvl, m]) => n === "log" && lvl === "error" && m.includes("kaboom")));
  assert.equal(witError(() => a.run({ ...ctx, config: "{" }, '{"name":"Ada"}')).tag, "permanent");
});

test("tools and connectors", () => {
  const t = corral.tools({
    shout: { description: "Upper-cases.", input: { type: "object", properties: { text: { type: "string" } }, required: ["text"] }, call: (a) => ({ text: a.text.toUpperCase() }) },
  });
  assert.equal(t.listTools()[0].name, "shout");
  assert.deepEqual(JSON.parse(t.call("shout", '{"text":"a"}')), { text: "A" });
  assert.equal(witError(() => t.call("nope", "{}")).tag, "invalid-input");
  assert.equal(witError(() => t.call("shout", "{}")).tag, "invalid-input");

  const c = corral.connector({ name: "n", version: "0.1.0", description: "d", pull: (q, cursor) => ({ items: [{ cursor }], nextCursor: "2" }) });
  assert.deepEqual(c.pull("{}", "1"), { items: ['{"cursor":"1"}'], nextCursor: "2" });
  assert.match(witError(() => c.push(["{}"])).val, /does not support push/);
});

test("host functions and their errors", () => {
  assert.deepEqual(corral.callTool("t", { a: 1 }), { tool: "t", args: { a: 1 } });
  assert.equal(corral.putArtifact("r.json", { ok: true }), "art_1");
  const last = globalThis.hostCalls.at(-1);
  assert.deepEqual([last[0], last[1], last[2], new TextDecoder().decode(last[3])], ["putArtifact", "r.json", "application/json", '{"ok":true}']);
  assert.deepEqual(corral.ask("ok?", { type: "object" }), { approved: true });
  assert.deepEqual(corral.state.getJson("k"), { x: 1 });
  assert.equal(corral.state.getJson("missing", 7), 7);
  globalThis.hostErrors.callTool = { tag: "permanent", val: "not granted: tool t" };
  assert.throws(() => corral.callTool("t"), (e) => e instanceof corral.Permanent && e.message === "not granted: tool t");
  delete globalThis.hostErrors.callTool;
});

test("model().chat converts the request and the answer", () => {
  const r = corral.model("fast").chat(
    [{ role: "system", content: "be brief" }, { role: "user", content: "count" }],
    { tools: [{ name: "word-count", description: "counts", parameters: { type: "object" } }], maxTokens: 64, temperature: 0 },
  );
  const [name, alias, req] = globalThis.hostCalls.at(-1);
  assert.equal(name, "chat");
  assert.equal(alias, "fast");
  assert.deepEqual(req.messages.map((m) => m.role), ["system", "user"]);
  assert.deepEqual(JSON.parse(req.tools[0].parameters), { type: "object" });
  assert.equal(req.maxTokens, 64);
  assert.equal(r.finishReason, "tool-calls");
  assert.deepEqual(r.usage, { inputTokens: 12, outputTokens: 3 });
  assert.deepEqual(r.toolCalls[0].parseArguments(), { text: "a b" });
  corral.model("fast").chat([r.message(), { role: "tool", content: "2", toolCallId: "c1" }]);
  const [, , again] = globalThis.hostCalls.at(-1);
  assert.equal(again.messages[0].toolCalls[0].name, "word-count");
  assert.equal(again.messages[1].toolCallId, "c1");
});

test("model errors are thrown as the SDK's exceptions", () => {
  globalThis.hostErrors.chat = { tag: "permanent", val: "not granted: model `x`" };
  try {
    assert.throws(() => corral.model("x").chat([{ role: "user", content: "hi" }]), corral.Permanent);
  } finally {
    delete globalThis.hostErrors.chat;
  }
  assert.throws(() => corral.model("x").chat([{ role: "robot", content: "hi" }]), corral.InvalidInput);
});
