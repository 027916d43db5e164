// A loader hook for tests under plain Node: `corral:plugin/host@0.2.0` and
// `corral:plugin/model@0.2.0` become fakes that record calls in `globalThis.hostCalls`
// (and throw `globalThis.hostErrors[name]`).
export async function resolve(specifier, context, next) {
  if (specifier === "corral:plugin/host@0.2.0" || specifier === "corral:plugin/model@0.2.0") {
    return { url: new URL("./fake-bindings.mjs", import.meta.url).href, shortCircuit: true };
  }
  return next(specifier, context);
}
