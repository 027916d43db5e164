// {{name}}: a Corral connector (records in and out of an outside system), in JavaScript.
// This one serves a fixed list, two records a page; replace RECORDS with your system.
import * as corral from "./corral.js";

const RECORDS = ["alpha", "beta", "gamma"];
const PAGE_SIZE = 2;

export const connector = corral.connector({
  name: "{{name}}",
  version: "0.1.0",
  description: "Reads a fixed list of records, two a page.",
  pull(query, cursor) {
    const start = cursor === undefined ? 0 : Number(cursor);
    if (!Number.isInteger(start) || start < 0) throw new corral.InvalidInput(`bad cursor ${JSON.stringify(cursor)}`);
    const items = RECORDS.slice(start, start + PAGE_SIZE).map((name, i) => ({ id: start + i, name }));
    const end = start + items.length;
    return { items, nextCursor: end < RECORDS.length ? String(end) : undefined };
  },
});
