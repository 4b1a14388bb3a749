#!/usr/bin/env bash
# Records the corpus of real agent requests again (tests/corpus/README.md):
# run it after `bash .ci/run` has installed the pinned agents and SDKs, and
# whenever their pinned versions move in .ci/run.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -f tests/corpus/*.json
cargo test --test clients agents::record_the_agent_corpus -- --ignored --exact
ls tests/corpus/*.json | wc -l
