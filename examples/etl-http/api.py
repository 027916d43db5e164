#!/usr/bin/env python3
"""A tiny JSON API for the etl-http example (Python standard library only).

GET  /items?cursor=N  pages of orders, 2 per page: {"items": [...], "next": "N" | null}
POST /items           takes a JSON array of records, prints them, answers {"accepted": n}

Every request needs `Authorization: Bearer $EXAMPLE_API_TOKEN` (default `demo-token`), which
Corral fills in from the tenant secret API_TOKEN: the connector never holds it.
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

TOKEN = os.environ.get("EXAMPLE_API_TOKEN", "demo-token")
ORDERS = [
    {"Order ID": str(1000 + i), "Quantity": str(i % 7 + 1), "Unit Price": f"{2.5 * (i % 4 + 1):.2f}"}
    for i in range(9)
]


class Handler(BaseHTTPRequestHandler):
    def _answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self):
        if self.headers.get("authorization") != f"Bearer {TOKEN}":
            self._answer(401, {"error": "bad token"})
            return False
        return True

    def do_GET(self):
        url = urlparse(self.path)
        if url.path != "/items":
            return self._answer(404, {"error": "not found"})
        if not self._authorized():
            return
        start = int(parse_qs(url.query).get("cursor", ["0"])[0])
        page = ORDERS[start : start + 2]
        nxt = str(start + 2) if start + 2 < len(ORDERS) else None
        self._answer(200, {"items": page, "next": nxt})

    def do_POST(self):
        if urlparse(self.path).path != "/items":
            return self._answer(404, {"error": "not found"})
        if not self._authorized():
            return
        records = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
        for r in records:
            print("received", json.dumps(r), flush=True)
        self._answer(200, {"accepted": len(records)})

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8787
    print(f"example API on http://127.0.0.1:{port}/items (token {TOKEN!r})", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
