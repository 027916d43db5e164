#!/usr/bin/env bash
# The ETL demo on the dashboard: starts `corral serve` on a fresh data dir, uploads the demo
# plugins, stores examples/etl/pipeline.toml (its JSON form, plugins by name@version) in
# tenant `default`, prints the URL and the admin token, and leaves the server running.
# Press Enter to start a run on the demo CSV (or start one from the dashboard); Ctrl-C stops.
# (Run by `./x demo --serve`, which builds everything first and sets $CORRAL.)
set -euo pipefail
cd "$(dirname "$0")"
CORRAL="${CORRAL:-corral}"
LISTEN="${CORRAL_LISTEN:-127.0.0.1:8080}"
URL="http://$LISTEN"
data=$(mktemp -d)
log="$data/serve.log"
"$CORRAL" serve --data-dir "$data" --listen "$LISTEN" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
    grep -q "listening on" "$log" && break
    kill -0 "$server" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.2
done
token=$(grep -o 'crl_[0-9a-f]*' "$log" | head -1)
[ -n "$token" ] || { cat "$log"; echo "no admin token printed" >&2; exit 1; }
auth=(-H "Authorization: Bearer $token")
for p in csv_extract transform validate; do
    curl -sf "${auth[@]}" -H 'Content-Type: application/wasm' \
         --data-binary "@../../target/plugins/$p.wasm" "$URL/v1/plugins" >/dev/null
done
# The pipeline file names plugins by path; the stored form names the uploaded name@version.
python3 - "$URL" "$token" <<'PY' >"$data/pipeline.json"
import json, sys, tomllib, urllib.request
url, token = sys.argv[1], sys.argv[2]
req = urllib.request.Request(url + "/v1/plugins", headers={"Authorization": "Bearer " + token})
plugins = json.load(urllib.request.urlopen(req))["plugins"]
by_file = {p["name"].replace("-", "_"): f'{p["name"]}@{p["version"]}' for p in plugins}
spec = tomllib.load(open("pipeline.toml", "rb"))
for step in spec["steps"]:
    stem = step["plugin"].rsplit("/", 1)[-1].removesuffix(".wasm")
    step["plugin"] = by_file[stem.replace("-", "_")]
print(json.dumps(spec))
PY
curl -sf "${auth[@]}" -H 'Content-Type: application/json' \
     --data-binary "@$data/pipeline.json" "$URL/v1/pipelines" >/dev/null
python3 -c 'import json; print(json.dumps({"pipeline": "etl-demo", "input": {"csv": open("data/orders.csv").read()}}))' >"$data/run.json"
pipeline_id=$(curl -sf "${auth[@]}" "$URL/v1/pipelines" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pipelines"][0]["id"])')
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["pipeline"]=sys.argv[2]; json.dump(d, open(sys.argv[1], "w"))' "$data/run.json" "$pipeline_id"
cat <<MSG

  Dashboard:  $URL/
  Token:      $token   (tenant default, admin; paste it into the login form)

  Press Enter to start a run of etl-demo on examples/etl/data/orders.csv; Ctrl-C stops the server.
MSG
while read -r _; do
    curl -sf "${auth[@]}" -H 'Content-Type: application/json' \
         --data-binary "@$data/run.json" "$URL/v1/runs" && echo
done
wait "$server"
