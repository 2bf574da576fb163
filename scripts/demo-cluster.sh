#!/usr/bin/env bash
# make demo-cluster: the shop on a two-node lab (deploy/examples/shop-cluster.yaml),
# an agent per node (each attached to its node's pods only), `weir relay`
# over both (mutual TLS, certificates from `weir certs`), traffic within
# and across nodes, then the merged graph, coverage and suggested
# policies through the relay. `make demo-cluster-down` undoes it all.
set -euo pipefail
cd "$(dirname "$0")/.."

WEIR=${WEIR:-target/release/weir}
LAB=${LAB:-cluster}
LISTEN=${LISTEN:-127.0.0.1:9090}
SPEC=${SPEC:-deploy/examples/shop-cluster.yaml}
RUN_DIR=/run/weir/demo-cluster-$LAB
NODES=(node-a node-b)
# Per node: the user API, the relay listener, the pin directory.
declare -A API=([node-a]=127.0.0.1:9191 [node-b]=127.0.0.1:9192)
declare -A RELAY_PORT=([node-a]=127.0.0.1:4244 [node-b]=127.0.0.1:4245)
pin_dir() { echo "/sys/fs/bpf/weir-demo-$LAB-$1"; }
SERVER="http://$LISTEN"

lab() { "$WEIR" lab --lab "$LAB" "$@"; }

stop() { # stop PIDFILE
  [[ -f $1 ]] || return 0
  local pid
  pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$1"
}

down() {
  stop "$RUN_DIR/relay.pid"
  for node in "${NODES[@]}"; do
    stop "$RUN_DIR/agent-$node.pid"
    "$WEIR" agent --cleanup --pin-dir "$(pin_dir "$node")"
  done
  lab down
  echo "cluster demo stopped: relay and agents gone, datapaths unpinned, lab $LAB removed"
}

if [[ ${1:-} == down ]]; then
  down
  exit 0
fi

[[ $(id -u) == 0 ]] || { echo "make demo-cluster needs root (eBPF, network namespaces)" >&2; exit 1; }
mkdir -p "$RUN_DIR"
# A previous demo is replaced, not stacked.
if compgen -G "$RUN_DIR/*.pid" >/dev/null; then down >/dev/null 2>&1 || true; fi

wait_healthy() { # wait_healthy URL PIDFILE LOG
  for _ in $(seq 100); do
    if curl -fsS "$1/healthz" >/dev/null 2>&1; then return 0; fi
    kill -0 "$(cat "$2")" 2>/dev/null || { cat "$3"; exit 1; }
    sleep 0.1
  done
  echo "no answer from $1 (log: $3)" >&2
  exit 1
}

echo "==> lab: $SPEC (two nodes)"
lab up --replace "$SPEC"

echo "==> certificates (weir certs): a CA, one per agent, one for the relay"
rm -rf "$RUN_DIR/certs" "$RUN_DIR/relay" "$RUN_DIR"/state-*
"$WEIR" certs --out "$RUN_DIR/certs" $(printf -- '--node %s ' "${NODES[@]}") >/dev/null

agents=()
for node in "${NODES[@]}"; do
  echo "==> agent of $node on http://${API[$node]}, relay listener ${RELAY_PORT[$node]} (log: $RUN_DIR/agent-$node.log)"
  setsid "$WEIR" agent --source "lab:$LAB" --node-name "$node" --listen "${API[$node]}" \
    --sweep-interval 1s --state-dir "$RUN_DIR/state-$node" --pin-dir "$(pin_dir "$node")" \
    --relay-listen "${RELAY_PORT[$node]}" --relay-tls-dir "$RUN_DIR/certs/agents/$node" \
    >"$RUN_DIR/agent-$node.log" 2>&1 < /dev/null &
  echo $! >"$RUN_DIR/agent-$node.pid"
  agents+=(--agent "$node=https://${RELAY_PORT[$node]}")
done
for node in "${NODES[@]}"; do
  wait_healthy "http://${API[$node]}" "$RUN_DIR/agent-$node.pid" "$RUN_DIR/agent-$node.log"
done

echo "==> relay on $SERVER over ${NODES[*]} (log: $RUN_DIR/relay.log)"
setsid "$WEIR" relay --listen "$LISTEN" --state-dir "$RUN_DIR/relay" --tls-dir "$RUN_DIR/certs/relay" \
  "${agents[@]}" --sync-interval 2s \
  >"$RUN_DIR/relay.log" 2>&1 < /dev/null &
echo $! >"$RUN_DIR/relay.pid"
wait_healthy "$SERVER" "$RUN_DIR/relay.pid" "$RUN_DIR/relay.log"
sleep 1 # the agents attach to their pods on their first resync

# pod NS PREFIX [N]: the Nth (default 1st) pod of NS whose name starts with PREFIX.
pod() {
  lab status -o json | python3 -c '
import json, sys
ns, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
pods = [p["name"] for p in json.load(sys.stdin)["pods"] if p["namespace"] == ns and p["name"].startswith(prefix)]
print(ns + "/" + sorted(pods)[n - 1])' "$1" "$2" "${3:-1}"
}
cluster_ip() {
  lab status -o json | python3 -c '
import json, sys
ns, name = sys.argv[1].split("/")
s = next(s for s in json.load(sys.stdin)["services"] if s["namespace"] == ns and s["name"] == name)
print(s["clusterIPs"][0])' "$1"
}

loadgen=$(pod shop loadgen)
frontend1=$(pod shop frontend- 1)
frontend2=$(pod shop frontend- 2)
cart=$(pod shop cartservice-)
catalog=$(pod shop catalog-)
store=$(pod data store-)
exporter_b=$(lab status -o json | python3 -c '
import json, sys
print(next("data/" + p["name"] for p in json.load(sys.stdin)["pods"] if p["name"].startswith("node-exporter-") and p["node"] == "node-b"))')
cart_svc=$(cluster_ip shop/cartservice)

probe() { lab probe "$@" --timeout 2s >/dev/null || echo "   (probe $* blocked)"; }

echo "==> traffic: node-a's frontends call the cart on node-b, the cart its store (node-b), the catalog (node-a)"
for round in 1 2 3; do
  for fe in "$frontend1" "$frontend2"; do
    probe "$loadgen" "$fe" 8080/TCP
    probe "$fe" "$catalog" 3550/TCP
    probe "$fe" "$cart_svc" 7070/TCP
  done
  probe "$cart" "$store" 6379/TCP
  probe "$cart" "$catalog" 3550/TCP
  probe "$loadgen" "$exporter_b" 9100/TCP
  echo "   round $round done"
done
sleep 4 # a sweep on each agent, then a relay sync

for node in "${NODES[@]}"; do
  echo
  echo "==> what $node's agent alone saw (http://${API[$node]}): its side of each connection"
  "$WEIR" graph --server "http://${API[$node]}"
done
echo
echo "==> the cluster through the relay ($SERVER/api/graph): each connection once"
"$WEIR" graph --server "$SERVER"
echo
echo "==> coverage ($SERVER/api/v1/coverage)"
curl -fsS "$SERVER/api/v1/coverage"
echo
echo
echo "==> suggested NetworkPolicies for the whole cluster (weir export --server $SERVER -o $RUN_DIR/policies)"
rm -rf "$RUN_DIR/policies"
"$WEIR" export --server "$SERVER" -o "$RUN_DIR/policies"
ls "$RUN_DIR/policies"
echo "--- $RUN_DIR/policies/shop.yaml (first 40 lines)"
head -40 "$RUN_DIR/policies/shop.yaml"
cat <<MSG

The relay serves the agents' API and UI over the merged view: $SERVER/
  $WEIR observe --server $SERVER -f         flows of both nodes, in time order
  $WEIR status --server $SERVER             readiness over the whole cluster
  curl $SERVER/api/v1/coverage               which nodes are synced
Each agent: http://${API[node-a]}/ (node-a), http://${API[node-b]}/ (node-b).
Kill one (kill \$(cat $RUN_DIR/agent-node-b.pid)) and the relay marks it stale,
keeps its edges, and refuses writes until it is back (--allow-partial).
Stop and clean up with: make demo-cluster-down
MSG
