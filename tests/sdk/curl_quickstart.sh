#!/usr/bin/env bash
# The README's quickstart with plain curl, step by step, against the p402 at
# $P402_URL (default http://127.0.0.1:8402). Each step prints a "### name"
# line, then what curl printed, for the Rust test to check. Needs curl and
# sed only.
set -euo pipefail
base=${P402_URL:-http://127.0.0.1:8402}
json=(-H 'content-type: application/json')

step() { printf '### %s\n' "$1"; }
# Any HTTP error ends the script, with the error body shown.
curl() { command curl --silent --fail-with-body "$@"; }

step health
curl "$base/health"
echo

step session
session=$(curl "$base/api/v2/sessions" "${json[@]}" \
  -d '{"budget_usd": 5, "name": "quickstart", "expires_in_hours": 8}')
echo "$session"
id=$(printf '%s' "$session" | sed -n 's/.*"session_id" *: *"\([^"]*\)".*/\1/p')
[ -n "$id" ] || { echo "no session_id in: $session" >&2; exit 1; }

step chat
curl "$base/v1/chat/completions" "${json[@]}" \
  -d '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "p402": {"session_id": "'"$id"'"}}'
echo

# The same question again: answered from the cache, for nothing.
step repeat
curl "$base/v1/chat/completions" "${json[@]}" \
  -d '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "p402": {"session_id": "'"$id"'"}}'
echo

# Headers carry the key figures too (X-P402-Session instead of the body field).
step headers
curl -i "$base/v1/chat/completions" "${json[@]}" -H "X-P402-Session: $id" \
  -d '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}' | grep -i '^x-p402'

step stream
curl -N "$base/v1/chat/completions" "${json[@]}" \
  -d '{"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "Count to 3"}]}'

step spent
curl "$base/api/v2/sessions/$id"
echo

step models
curl "$base/v1/models"
echo
