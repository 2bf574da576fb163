#!/usr/bin/env bash
# Do two weir binaries print and serve the same things on the demo shop?
# For a refactor that must not change behaviour: the CLI's stdout, stderr
# and exit codes, the API's JSON and the exported YAML, online and offline.
#
#   scripts/output-parity.sh OLD_WEIR NEW_WEIR [OUT_DIR]
#
# Records once, with OLD: the demo shop lab (scripts/demo.sh) and its
# traffic, the exported policies applied, shop in audit mode and one flow
# the policies deny; then the agent stops and its state directory is kept.
# Captures twice, once per binary: a copy of that state, the binary's own
# agent started on it (no new traffic), every read, every --help, a few
# refusals and then a few writes
# captured, the agent stopped. Prints `diff -r` of the two captures and
# exits with its status (0: identical). Only time-relative text ("2s ago",
# the age in `weir status`'s header) is masked, in both captures alike.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $# -ge 2 ]] || { echo "usage: $0 OLD_WEIR NEW_WEIR [OUT_DIR]" >&2; exit 2; }
OUT=${3:-target/output-parity}
LAB=parity
LISTEN=127.0.0.1:9390
SERVER="http://$LISTEN"
RUN_DIR=/run/weir/demo-$LAB
PIN_DIR=/sys/fs/bpf/weir-demo-$LAB
rm -rf "$OUT"
mkdir -p "$OUT/bin-old" "$OUT/bin-new"
OUT=$(realpath "$OUT")
# Both named `weir`: clap's usage lines print the program's name.
cp "$1" "$OUT/bin-old/weir"
cp "$2" "$OUT/bin-new/weir"
OLD=$OUT/bin-old/weir
NEW=$OUT/bin-new/weir

stop_agent() {
  local pidfile=$1
  [[ -f $pidfile ]] || return 0
  local pid
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$pidfile"
}

cleanup() {
  stop_agent "$OUT/agent.pid"
  LAB=$LAB LISTEN=$LISTEN WEIR=$OLD scripts/demo.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT

# run NAME CMD...: stdout, stderr and the exit code of one command.
run() {
  local name=$1
  shift
  local rc=0
  "$@" >"$DIR/$name.out" 2>"$DIR/$name.err" || rc=$?
  echo "$rc" >"$DIR/$name.rc"
}
# api NAME PATH [curl args]: the body and status code of one request.
api() {
  local name=$1 path=$2
  shift 2
  curl -sS -o "$DIR/api.$name.body" -w '%{http_code} %{content_type}\n' "$@" "$SERVER$path" >"$DIR/api.$name.status" 2>&1 || true
}

echo "==> recording with $OLD"
LAB=$LAB LISTEN=$LISTEN WEIR=$OLD scripts/demo.sh >"$OUT/record.log" 2>&1
TOKEN=$(cat "$RUN_DIR/state/api-token")
WEIR_TOKEN=$TOKEN "$OLD" policy apply --server "$SERVER" -f "$RUN_DIR/policies" >>"$OUT/record.log"
WEIR_TOKEN=$TOKEN "$OLD" mode set --server "$SERVER" shop audit >>"$OUT/record.log"
pod() {
  "$OLD" lab --lab "$LAB" status -o json | python3 -c '
import json, sys
ns, prefix = sys.argv[1], sys.argv[2]
print(next(p["namespace"] + "/" + p["name"] for p in json.load(sys.stdin)["pods"]
           if p["namespace"] == ns and p["name"].startswith(prefix)))' "$1" "$2"
}
# Not in the suggestion: audited (AUDIT verdict, a denied-edge in the graph).
"$OLD" lab --lab "$LAB" probe "$(pod shop loadgen)" "$(pod shop catalog-)" 3550/TCP --timeout 2s >>"$OUT/record.log" || true
sleep 3 # a sweep or two
"$OLD" observe --server "$SERVER" --last 1000 -o json >"$OUT/flows.jsonl"
# The flow log lives in memory: both CLIs read it from this agent, now.
for tag in old new; do
  bin=$OLD
  [[ $tag == new ]] && bin=$NEW
  DIR=$OUT/$tag
  mkdir -p "$DIR"
  run observe-live "$bin" observe --server "$SERVER" --last 1000
  run observe-live-json "$bin" observe --server "$SERVER" --last 1000 -o json
  run observe-live-shop "$bin" observe --server "$SERVER" --last 1000 --namespace shop --protocol TCP
  run observe-live-audit "$bin" observe --server "$SERVER" --last 1000 --verdict AUDIT
  run observe-live-pod "$bin" observe --server "$SERVER" --last 1000 --pod "$(pod shop loadgen)"
done
"$OLD" lab --lab "$LAB" status -o json >"$OUT/lab-status.json"
stop_agent "$RUN_DIR/agent.pid"
# Unpinned: each capture starts from the stored state alone, not from flow
# entries still in the kernel (their times convert to wall-clock time with
# each agent's own boot-time offset).
"$OLD" agent --cleanup --pin-dir "$PIN_DIR" >>"$OUT/record.log" 2>&1
cp -a "$RUN_DIR/state" "$OUT/state.recorded"
cp -a "$RUN_DIR/policies" "$OUT/policies"

# The offline inventory: the lab's objects as `kubectl get -o yaml` gives them.
python3 - "$OUT/lab-status.json" deploy/examples/shop.yaml >"$OUT/inventory.yaml" <<'PY'
import json, sys
status = json.load(open(sys.argv[1]))
docs = []
spec = open(sys.argv[2]).read().split("\n---\n")
docs += [d for d in spec if "\nkind: Namespace\n" in "\n" + d + "\n"]
def obj(o):
    return json.dumps(o)
for pod in status["pods"]:
    w = pod["workload"]
    if w["kind"] == "Deployment":
        owner = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "uid": "u", "controller": True,
                  "name": w["name"] + "-" + pod["labels"]["pod-template-hash"]}]
    elif w["kind"] == "Pod":
        owner = []
    else:
        owner = [{"apiVersion": "apps/v1", "kind": w["kind"], "name": w["name"], "uid": "u", "controller": True}]
    ports = [dict({"containerPort": p["port"], "protocol": p["protocol"]}, **({"name": p["name"]} if "name" in p else {}))
             for p in pod["ports"]]
    ips = [{"ip": ip} for ip in pod["ips"]]
    docs.append(obj({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": pod["name"], "namespace": pod["namespace"],
                                  "labels": pod["labels"], "ownerReferences": owner},
                     "spec": {"containers": [{"name": "c", "image": "lab", "ports": ports}]},
                     "status": {"podIP": ips[0]["ip"], "podIPs": ips}}))
for svc in status["services"]:
    docs.append(obj({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": svc["name"], "namespace": svc["namespace"]},
                     "spec": {"selector": svc.get("selector", {}), "clusterIPs": svc.get("clusterIPs", []),
                              "ports": [{k: p[k] for k in ("name", "port", "targetPort", "protocol") if k in p}
                                        for p in svc.get("ports", [])]}}))
print("\n---\n".join(docs))
PY

capture() {
  local tag=$1 bin=$2
  DIR=$OUT/$tag
  mkdir -p "$DIR"
  echo "==> capturing with $bin"
  cp -a "$OUT/state.recorded" "$OUT/state.$tag"
  setsid "$bin" agent --source "lab:$LAB" --listen "$LISTEN" --sweep-interval 1s \
    --state-dir "$OUT/state.$tag" --pin-dir "$PIN_DIR" >"$OUT/agent.$tag.log" 2>&1 </dev/null &
  echo $! >"$OUT/agent.pid"
  for _ in $(seq 100); do curl -fsS "$SERVER/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 2 # the first resync
  # Each start makes a new API token.
  local token
  token=$(cat "$OUT/state.$tag/api-token")

  local s=(--server "$SERVER")
  run graph "$bin" graph "${s[@]}"
  run graph-json "$bin" graph "${s[@]}" -o json
  run observe-shop "$bin" observe "${s[@]}" --namespace shop --protocol TCP
  run observe "$bin" observe "${s[@]}" --last 100
  run observe-json "$bin" observe "${s[@]}" --last 100 -o json
  run observe-dropped "$bin" observe "${s[@]}" --verdict AUDIT
  run export "$bin" export "${s[@]}"
  run export-dir "$bin" export "${s[@]}" -o "$DIR/exported"
  run export-aggregated "$bin" export "${s[@]}" --aggregate-external 24,64
  run verify "$bin" verify "${s[@]}" --policies "$OUT/policies" --strict
  run verify-json "$bin" verify "${s[@]}" --policies "$OUT/policies" -o json
  run status "$bin" status "${s[@]}"
  run status-json "$bin" status "${s[@]}" -o json
  run policy-list "$bin" policy list "${s[@]}"
  run policy-list-yaml "$bin" policy list "${s[@]}" -o yaml
  run policy-list-json "$bin" policy list "${s[@]}" -o json
  run mode-list "$bin" mode list "${s[@]}"
  run mode-list-json "$bin" mode list "${s[@]}" -o json
  # Offline, from the recorded flow log and the inventory.
  local o=(--flows "$OUT/flows.jsonl" --inventory "$OUT/inventory.yaml")
  run offline-export "$bin" export "${o[@]}"
  run offline-verify "$bin" verify "${o[@]}" --policies "$OUT/policies" --strict
  run refused-status-offline "$bin" status "${o[@]}"
  # Refusals: their messages and exit codes.
  run refused-no-token env -u WEIR_TOKEN "$bin" policy apply "${s[@]}" -f "$OUT/policies"
  run refused-bad-token env WEIR_TOKEN=wrong "$bin" mode set "${s[@]}" data audit
  run refused-bad-mode env WEIR_TOKEN="$token" "$bin" mode set "${s[@]}" data nope
  run refused-unreachable "$bin" observe --server http://127.0.0.1:1 --last 1
  run refused-unreachable-export "$bin" export --server http://127.0.0.1:1
  run refused-missing-flows "$bin" export --flows "$OUT/missing.jsonl" --inventory "$OUT/inventory.yaml"
  run refused-missing-policies "$bin" verify "${s[@]}" --policies "$OUT/missing"
  run refused-bad-namespace "$bin" observe "${s[@]}" --namespace Not_A_Name

  # Every command's help: the flags, their defaults and their words.
  run help "$bin" --help
  local cmd
  for cmd in agent observe graph export verify status "policy apply" "policy delete" "policy list" \
    "mode set" "mode list" "lab up" "lab down" "lab status" "lab probe"; do
    # shellcheck disable=SC2086 # the subcommand's words split on purpose
    run "help-${cmd// /-}" "$bin" $cmd --help
  done

  api healthz /healthz
  api graph /api/graph
  api graph-filtered '/api/graph?namespace=shop&protocol=TCP&verdict=AUDIT'
  api flows '/api/flows?last=100'
  api policies /api/policies
  api policies-json '/api/policies?format=json'
  api diff '/api/policies/diff?namespace=shop'
  api verify-suggestion /api/verify/suggestion
  api verify-body /api/verify -X POST --data-binary "@$OUT/policies/shop.yaml" -H 'content-type: application/yaml'
  api status /api/status
  api impact '/api/impact?namespace=data&mode=enforce&window=1h'
  api auth /api/auth
  api modes /api/modes
  api enforced /api/policies/enforced
  api enforced-yaml '/api/policies/enforced?format=yaml'
  local edge node
  edge=$(python3 -c 'import json,sys; e=json.load(sys.stdin)["edges"][0]; print("source=%s&target=%s" % (e["source"], e["target"]))' <"$DIR/api.graph.body")
  node=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["nodes"][0]["id"])' <"$DIR/api.graph.body")
  api edge "/api/edge?$edge"
  api node "/api/node?id=$node"
  api bad-protocol '/api/graph?protocol=bogus'
  api bad-since '/api/graph?since=yesterday'
  api no-token /api/modes/data -X PUT --data '{"mode":"audit"}' -H 'content-type: application/json'
  api not-found /api/nope

  # Changes, last: what each prints, and what the agent holds after them.
  local t=(env WEIR_TOKEN="$token")
  run write-mode-set "${t[@]}" "$bin" mode set "${s[@]}" data audit
  run write-policy-delete "${t[@]}" "$bin" policy delete "${s[@]}" shop/weir-loadgen
  run write-policy-apply "${t[@]}" "$bin" policy apply "${s[@]}" -f "$OUT/policies"
  run write-export-apply "${t[@]}" "$bin" export "${s[@]}" --apply --namespace shop
  run write-delete-missing "${t[@]}" "$bin" policy delete "${s[@]}" shop/nope
  api after-writes-enforced /api/policies/enforced
  api after-writes-modes /api/modes

  stop_agent "$OUT/agent.pid"
  # Time-relative text only (and the column widths it sets); everything else is compared as it is.
  sed -i -E 's/[0-9]+(ms|s|m|h|d) ago/N ago/g; s/\(([0-9]+(ms|s|m|h|d))+\)/(N)/g; s/  +/\t/g' "$DIR"/status.out
  sed -i -E 's/"(uptime_seconds|observed_seconds|seconds_since_last_new_edge|version)": *[0-9.]+/"\1": N/g; s/"generated_at": *"[^"]*"/"generated_at": N/g' "$DIR"/api.* "$DIR"/*.out
}

capture old "$OLD"
capture new "$NEW"
echo "==> diff -r $OUT/old $OUT/new"
diff -r "$OUT/old" "$OUT/new"
echo "identical: $(find "$OUT/old" -type f | wc -l) files"
