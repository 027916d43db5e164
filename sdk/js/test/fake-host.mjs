// A loader hook for tests under plain Node: `corral:plugin/host@0.1.0` becomes a fake
// that records calls in `globalThis.hostCalls` (and throws `globalThis.hostErrors[name]`).
export async function resolve(specifier, context, next) {
  if (specifier === "corral:plugin/host@0.1.0") {
    return { url: new URL("./fake-bindings.mjs", import.meta.url).href, shortCircuit: true };
  }
  return next(specifier, context);
}
