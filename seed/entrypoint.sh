#!/usr/bin/env bash
# Entry point of the seed sidecar: seed SEED_COUNT policy repos (+ SEED_PROBES probe repos)
# as bare repos under SEED_ROOT with the harness's seeding code. Idempotent: compose v1
# re-runs a one-shot service on every `up`, and repos already seeded are left as they are.
# Exit status: 0 when every repo is there, 1 when any failed (the count is on stderr),
# 2 on bad settings.
set -euo pipefail
root="${SEED_ROOT:-/repos}"
count="${SEED_COUNT:-}"
probes="${SEED_PROBES:-4}"
if ! [[ "$count" =~ ^[0-9]+$ ]]; then
    echo "seed: SEED_COUNT=${count:-<unset>} is not a whole number; set SEED_COUNT to the number of policy repos" >&2
    exit 2
fi
echo "seed: ${count} policy repos + ${probes} probe repos into ${root}"
exec python3 -m harness.seed --root "$root" --count "$count" --probes "$probes" "$@"
