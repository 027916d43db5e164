globalThis.hostCalls = globalThis.hostCalls || [];
globalThis.hostErrors = globalThis.hostErrors || {};
const rec = (name, result) => (...args) => {
  globalThis.hostCalls.push([name, ...args]);
  if (globalThis.hostErrors[name]) throw { payload: globalThis.hostErrors[name] };
  return typeof result === "function" ? result(...args) : result;
};
export const log = rec("log");
export const progress = rec("progress");
export const callTool = rec("callTool", (n, a) => JSON.stringify({ tool: n, args: JSON.parse(a) }));
export const putArtifact = rec("putArtifact", "art_1");
export const ask = rec("ask", '{"approved": true}');
export const stateGet = rec("stateGet", (k) => (k === "k" ? new TextEncoder().encode('{"x":1}') : undefined));
export const stateSet = rec("stateSet");
export const chat = rec("chat", () => ({
  content: "",
  toolCalls: [{ id: "c1", name: "word-count", arguments: '{"text":"a b"}' }],
  finishReason: "tool-calls",
  usage: { inputTokens: 12n, outputTokens: 3n },
  cached: false,
}));
