// {{name}}: a Corral agent (one step of a pipeline), in JavaScript.
import * as corral from "./corral.js";

export const agent = corral.agent({
  name: "{{name}}",
  version: "0.1.0",
  description: "Greets whoever it is given.",
  // The input's JSON Schema: the SDK checks the input against it (and fills in defaults).
  input: { type: "object", properties: { name: { type: "string", default: "world" } } },
  output: { type: "object", properties: { greeting: { type: "string" } }, required: ["greeting"] },
  run(ctx, input) {
    if (!input.name.trim()) throw new corral.InvalidInput('"name" is empty');
    corral.progress(50, "greeting");
    corral.info(`greeting ${input.name} (attempt ${ctx.attempt})`);
    return { greeting: `Hello, ${input.name}!` };
  },
});
