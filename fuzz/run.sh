#!/usr/bin/env bash
# Runs every fuzz target: first over its saved corpus and every minimised
# crash kept in fuzz/regressions/<target> (each must pass), then fuzzing
# for SECONDS (default 30) per target. Needs the nightly toolchain; installs
# cargo-fuzz when it is missing.
#
#   fuzz/run.sh            # 30 s per target (what CI runs)
#   fuzz/run.sh 3600       # an hour per target
#   fuzz/run.sh 600 tcf    # ten minutes, one target
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds=${1:-30}
shift || true
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz
fi
targets=("$@")
if [ ${#targets[@]} = 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "regressions/$t" "artifacts/$t"
  echo "=== $t: replaying regressions and corpus ==="
  log=$(mktemp)
  if ! cargo +nightly fuzz run -O "$t" "corpus/$t" "regressions/$t" -- -runs=0 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz/run.sh: $t fails on a saved input (corpus/$t or regressions/$t)" >&2
    exit 1
  fi
  echo "=== $t: fuzzing for ${seconds}s ==="
  # New inputs that grow coverage are written to corpus/$t (kept in git).
  if ! cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz/run.sh: $t failed; the input is in fuzz/artifacts/$t/ (minimise it with 'cargo +nightly fuzz tmin $t FILE' and keep it in fuzz/regressions/$t/)" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" || true
  rm -f "$log"
done
echo "fuzz/run.sh: ${#targets[@]} targets passed"
