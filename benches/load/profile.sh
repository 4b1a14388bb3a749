#!/usr/bin/env bash
# Where p402's time per request goes: runs the release p402 under
# valgrind's callgrind (instruction counts, so the figures do not depend on
# how busy the machine is) in front of the load bench's upstream, sends
# N sequential requests after a warm-up, and prints the functions with the
# most instructions (inclusive and exclusive) per request.
#
#   bash benches/load/profile.sh [passthrough|cost|budget] [N]
#
# DOOR=messages or DOOR=responses sends the same question by that door
# (Anthropic Messages to an Anthropic provider, the Responses API to
# OpenAI, both native) instead of Chat Completions.
#
# Needs `cargo bench --bench load --no-run` (or a load run) first, and
# valgrind (apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/../.."

mode=${1:-passthrough}
n=${2:-300}
door=${DOOR:-chat}
out=target/load-bench/profile-$mode-$door
rm -rf "$out" && mkdir -p "$out"

bench=$(ls -t target/release/deps/load-* | grep -v '\.d$' | head -1)
# The upstream exits when its stdin closes: a fifo this script holds open
# until it ends.
mkfifo "$out/upstream.stdin"
"$bench" --role upstream <"$out/upstream.stdin" 2>"$out/upstream.log" &
upstream_pid=$!
exec 3>"$out/upstream.stdin"
trap 'kill $upstream_pid 2>/dev/null || true; kill $p402_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  grep -q "listening on" "$out/upstream.log" && break
  sleep 0.1
done
upstream=$(sed -n 's/.*listening on http:\/\/\([0-9.:]*\).*/\1/p' "$out/upstream.log")

routing=$mode
budget=""
case $mode in
  passthrough) ;;
  cost) ;;
  budget) routing=cost; budget=$'[budgets.global]\nbudget_usd = 1000000\nperiod = "month"\n' ;;
  *) echo "mode: passthrough, cost or budget" >&2; exit 2 ;;
esac
cat >"$out/p402.toml" <<EOF
[server]
listen = "127.0.0.1:0"
data_dir = "$PWD/$out/data"

[routing]
default_mode = "$routing"

[cache]
enabled = false

[providers.openai]
base_url = "http://$upstream/v1"
api_key_env = "OPENAI_API_KEY"

$budget
EOF
if [ "$door" = messages ]; then
  printf '[providers.anthropic]\nbase_url = "http://%s/v1"\napi_key_env = "ANTHROPIC_API_KEY"\n' "$upstream" >>"$out/p402.toml"
fi

env ANTHROPIC_API_KEY=sk-ant-load-bench-upstream OPENAI_API_KEY=sk-load-bench-upstream RUST_LOG=info \
  valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" \
  target/release/p402 serve --config "$out/p402.toml" --log-format text \
  2>"$out/p402.log" &
p402_pid=$!
for _ in $(seq 600); do
  grep -q "listening on http://" "$out/p402.log" && break
  sleep 0.1
done
addr=$(sed -n 's/.*listening on http:\/\/\([0-9.:]*\).*/\1/p' "$out/p402.log" | head -1)

send() {
  python3 - "$addr" "$1" "$door" <<'EOF'
import http.client, json, sys
host, port = sys.argv[1].split(":")
system = "You are a concise assistant for a software team. Answer in plain English in at most three sentences, and name the relevant standard when there is one."
question = "What does HTTP status 402 mean, and when should an API return it instead of 403?"
path, body = {
    "chat": ("/v1/chat/completions", {"model": "gpt-4o-mini", "temperature": 0.2, "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": question}]}),
    "messages": ("/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 1024, "temperature": 0.2,
        "system": system, "messages": [{"role": "user", "content": question}]}),
    "responses": ("/v1/responses", {"model": "gpt-4o-mini", "instructions": system,
        "input": question, "temperature": 0.2, "store": False}),
}[sys.argv[3]]
body = json.dumps(body)
conn = http.client.HTTPConnection(host, int(port), timeout=60)
for _ in range(int(sys.argv[2])):
    conn.request("POST", path, body, {"content-type": "application/json"})
    response = conn.getresponse()
    response.read()
    assert response.status == 200, response.status
EOF
}

# The tokenizer's tables load in the background at start (some 300M
# instructions). A count waits for them, so they are loaded before the
# counters are zeroed, however slowly this machine ran the warm-up.
tokenizer_loaded() {
  python3 - "$addr" <<'EOF'
import http.client, json, sys
host, port = sys.argv[1].split(":")
conn = http.client.HTTPConnection(host, int(port), timeout=600)
body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Are the tables loaded?"}]})
conn.request("POST", "/v1/messages/count_tokens", body, {"content-type": "application/json"})
response = conn.getresponse()
assert response.status == 200, (response.status, response.read())
EOF
}

send 50                      # warm-up: connections, first allocations
tokenizer_loaded
callgrind_control -z "$p402_pid" >/dev/null
send "$n"
callgrind_control -d "$p402_pid" >/dev/null
kill "$p402_pid"
wait "$p402_pid" 2>/dev/null || true

dump="$out/callgrind.out.1"   # the dump taken after the measured requests
total=$(callgrind_annotate "$dump" | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
echo "p402 $mode ($door door): $n sequential requests, $((total / n)) instructions per request (callgrind, $dump)"
echo
echo "== inclusive, top 45 (instructions over all $n requests)"
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | sed -n '/file:function/,$p' | sed -n '3,47p' | cut -c1-200
