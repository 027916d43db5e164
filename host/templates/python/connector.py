"""{{name}}: a Corral connector (records in and out of an outside system), in Python.

This one serves a fixed list, two records a page; replace RECORDS with your system.
"""

import corral_sdk as corral

RECORDS = ["alpha", "beta", "gamma"]
PAGE_SIZE = 2


@corral.connector(name="{{name}}", version="0.1.0",
                  description="Reads a fixed list of records, two a page.")
class Plugin:
    def pull(self, query, cursor):
        try:
            start = int(cursor or 0)
        except ValueError:
            raise corral.InvalidInput(f"bad cursor {cursor!r}") from None
        items = [{"id": i, "name": n} for i, n in enumerate(RECORDS)][start:start + PAGE_SIZE]
        end = start + len(items)
        return corral.Page(items=items, next_cursor=str(end) if end < len(RECORDS) else None)
