#!/usr/bin/env bash
# The ETL demo: CSV orders -> typed records -> data-quality report, a pipeline of three
# sandboxed plugins run by `corral run` on the embedded SQLite database. (Run by
# `./x demo` (`cargo xtask demo`), which builds everything first and sets $CORRAL to the release binary.)
set -euo pipefail
cd "$(dirname "$0")"
CORRAL="${CORRAL:-corral}"
input=$(mktemp)
trap 'rm -f "$input"' EXIT
python3 -c 'import json; print(json.dumps({"csv": open("data/orders.csv").read()}))' > "$input"
"$CORRAL" run pipeline.toml --input "@$input"
