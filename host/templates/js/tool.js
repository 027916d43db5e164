// {{name}}: a Corral tool plugin (functions agents call through `callTool`), in JavaScript.
import * as corral from "./corral.js";

export const tool = corral.tools({
  greet: {
    description: "Returns a greeting for `name`.",
    input: { type: "object", properties: { name: { type: "string", minLength: 1 } }, required: ["name"] },
    call(args) {
      return { greeting: `Hello, ${args.name}!` };
    },
  },
});
