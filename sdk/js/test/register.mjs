import { register } from "node:module";
register("./fake-host.mjs", import.meta.url);
