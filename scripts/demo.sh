#!/usr/bin/env bash
# make demo: bring up the example shop lab, start the agent on it, drive
# realistic traffic, print the flow graph. `make demo-down` undoes it all.
set -euo pipefail
cd "$(dirname "$0")/.."

WEIR=${WEIR:-target/release/weir}
LAB=${LAB:-demo}
LISTEN=${LISTEN:-127.0.0.1:9090}
SPEC=${SPEC:-deploy/examples/shop.yaml}
RUN_DIR=/run/weir/demo-$LAB
# The agent's datapath is pinned (it keeps enforcing without the agent);
# one pin directory per demo lab, removed by `down`.
PIN_DIR=/sys/fs/bpf/weir-demo-$LAB
SERVER="http://$LISTEN"

lab() { "$WEIR" lab --lab "$LAB" "$@"; }

down() {
  if [[ -f $RUN_DIR/agent.pid ]]; then
    pid=$(cat "$RUN_DIR/agent.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$RUN_DIR/agent.pid"
  fi
  "$WEIR" agent --cleanup --pin-dir "$PIN_DIR"
  lab down
  echo "demo stopped: agent gone, datapath unpinned, lab $LAB removed"
}

if [[ ${1:-} == down ]]; then
  down
  exit 0
fi

[[ $(id -u) == 0 ]] || { echo "make demo needs root (eBPF, network namespaces)" >&2; exit 1; }
mkdir -p "$RUN_DIR"

# A previous demo is replaced, not stacked.
if [[ -f $RUN_DIR/agent.pid ]]; then down >/dev/null 2>&1 || true; fi

echo "==> lab: $SPEC"
lab up --replace "$SPEC"

echo "==> agent on $SERVER (log: $RUN_DIR/agent.log)"
# A fresh learning store per demo: the lab is new, so is what it taught.
rm -rf "$RUN_DIR/state"
setsid "$WEIR" agent --source "lab:$LAB" --listen "$LISTEN" --sweep-interval 1s \
  --state-dir "$RUN_DIR/state" --pin-dir "$PIN_DIR" \
  >"$RUN_DIR/agent.log" 2>&1 < /dev/null &
echo $! >"$RUN_DIR/agent.pid"
for _ in $(seq 100); do
  if curl -fsS "$SERVER/healthz" >/dev/null 2>&1; then break; fi
  kill -0 "$(cat "$RUN_DIR/agent.pid")" 2>/dev/null || { cat "$RUN_DIR/agent.log"; exit 1; }
  sleep 0.1
done
sleep 1 # the agent attaches to every pod on its first resync

# pod NS PREFIX [N]: the Nth (default 1st) pod of NS whose name starts with PREFIX.
pod() {
  lab status -o json | python3 -c '
import json, sys
ns, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
pods = [p["name"] for p in json.load(sys.stdin)["pods"] if p["namespace"] == ns and p["name"].startswith(prefix)]
print(ns + "/" + sorted(pods)[n - 1])' "$1" "$2" "${3:-1}"
}
ip_of() {
  lab status -o json | python3 -c '
import json, sys
ns, name = sys.argv[1].split("/")
v6 = sys.argv[2] == "6"
p = next(p for p in json.load(sys.stdin)["pods"] if p["namespace"] == ns and p["name"] == name)
print(next(ip for ip in p["ips"] if (":" in ip) == v6))' "$1" "$2"
}

# cluster_ip NS/SERVICE: a Service's IPv4 ClusterIP (the lab DNATs it to a
# backend inside the client pod, as socket-level load balancing does).
cluster_ip() {
  lab status -o json | python3 -c '
import json, sys
ns, name = sys.argv[1].split("/")
s = next(s for s in json.load(sys.stdin)["services"] if s["namespace"] == ns and s["name"] == name)
print(next(ip for ip in s["clusterIPs"] if ":" not in ip))' "$1"
}

loadgen=$(pod shop loadgen)
frontend1=$(pod shop frontend- 1)
frontend2=$(pod shop frontend- 2)
cart=$(pod shop cartservice-)
catalog=$(pod shop catalog-)
store=$(pod data store-)
dns=$(pod kube-system coredns-)
store_v6=$(ip_of "$store" 6)
kube_dns=$(cluster_ip kube-system/kube-dns)
cart_svc=$(cluster_ip shop/cartservice)
catalog_v6=$(ip_of "$catalog" 6)

probe() { lab probe "$@" --timeout 2s >/dev/null || echo "   (probe $* blocked)"; }

echo "==> traffic: shoppers browse, add to cart, check out"
for round in 1 2 3; do
  for fe in "$frontend1" "$frontend2"; do
    probe "$loadgen" "$fe" 8080/TCP
    probe "$fe" "$kube_dns" 53/UDP
    probe "$fe" "$catalog" 3550/TCP
    probe "$fe" "$catalog_v6" 3550/TCP
    probe "$fe" "$cart_svc" 7070/TCP
  done
  probe "$cart" "$dns" 53/UDP
  probe "$cart" "$store" 6379/TCP
  probe "$cart" "$store_v6" 6379/TCP
  probe "$cart" 203.0.113.10 443/TCP
  echo "   round $round done"
done
sleep 2 # one more sweep brings the last counters

echo
echo "==> observed flow graph ($SERVER/api/graph)"
"$WEIR" graph --server "$SERVER"
echo
echo "==> latest flows (weir observe --last 10)"
"$WEIR" observe --server "$SERVER" --last 10

echo
echo "==> suggested NetworkPolicies (weir export -o $RUN_DIR/policies)"
rm -rf "$RUN_DIR/policies"
"$WEIR" export --server "$SERVER" -o "$RUN_DIR/policies"
ls "$RUN_DIR/policies"
echo "--- $RUN_DIR/policies/shop.yaml (first 40 lines)"
head -40 "$RUN_DIR/policies/shop.yaml"
echo
echo "==> weir verify --strict: do they allow exactly what was observed?"
"$WEIR" verify --policies "$RUN_DIR/policies" --server "$SERVER" --strict
echo
echo "==> readiness (weir status)"
"$WEIR" status --server "$SERVER"
TOKEN=$(cat "$RUN_DIR/state/api-token")
cat <<MSG

The web UI: $SERVER/#token=$TOKEN
  (the token, also in $RUN_DIR/state/api-token, authorizes changes:
   WEIR_TOKEN=\$(cat $RUN_DIR/state/api-token) $WEIR mode set --server $SERVER data audit)

The agent keeps running on $SERVER:
  $WEIR observe --server $SERVER -f        follow flows
  $WEIR graph --server $SERVER -o json     the graph as JSON
  curl $SERVER/metrics                     Prometheus metrics
  $WEIR lab --lab $LAB status              the lab's pods
  $WEIR export --server $SERVER -o DIR     the suggested policies, one file per namespace
  ls $RUN_DIR/policies                  what this demo exported
Stop and clean up with: make demo-down
MSG
