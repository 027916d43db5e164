// corral-world: agent-plugin
// hello-js: a Corral agent in JavaScript, on the corral.js SDK (sdk/js).
import * as corral from "../../sdk/js/corral.js";

export const agent = corral.agent({
  name: "hello-js",
  version: "0.1.0",
  description: "Greets whoever it is given.",
  input: {
    type: "object",
    properties: { name: { type: "string" }, excited: { type: "boolean", default: false } },
    required: ["name"],
  },
  output: { type: "object", properties: { greeting: { type: "string" } }, required: ["greeting"] },
  run(ctx, input) {
    if (!input.name.trim()) throw new corral.InvalidInput('"name" is empty');
    corral.progress(50, "greeting");
    corral.info(`greeting ${input.name} (step ${ctx.step}, attempt ${ctx.attempt})`);
    return { greeting: `Hello, ${input.name}${input.excited ? "!" : "."}` };
  },
});
