#!/usr/bin/env bash
# Runs every fuzz target: first over its saved corpus and every minimised
# crash kept in fuzz/regressions/<target> (each must pass), then fuzzing
# for SECONDS (default 30) per target. Needs the nightly toolchain; installs
# cargo-fuzz when it is missing.
#
#   fuzz/run.sh            # 30 s per target (what CI runs)
#   fuzz/run.sh 3600       # an hour per target
#   fuzz/run.sh 600 tcf    # ten minutes, one target
#
# Targets run FUZZ_JOBS at a time (default: one per core): libFuzzer uses
# one core, so on CI's 2 cores the seven targets take half the time.
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

# fuzz_one TARGET LOG: replay, then fuzz; exit 1 with the reason in LOG.
fuzz_one() {
  local t=$1 log=$2
  mkdir -p "corpus/$t" "regressions/$t" "artifacts/$t"
  echo "=== $t: replaying regressions and corpus ==="
  if ! cargo +nightly fuzz run -O "$t" "corpus/$t" "regressions/$t" -- -runs=0 >"$log.replay" 2>&1; then
    tail -n 60 "$log.replay"
    echo "fuzz/run.sh: $t fails on a saved input (corpus/$t or regressions/$t)"
    return 1
  fi
  echo "=== $t: fuzzing for ${seconds}s ==="
  # New inputs that grow coverage are written to corpus/$t (kept in git).
  if ! cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$log.run" 2>&1; then
    tail -n 60 "$log.run"
    echo "fuzz/run.sh: $t failed; the input is in fuzz/artifacts/$t/ (minimise it with 'cargo +nightly fuzz tmin $t FILE' and keep it in fuzz/regressions/$t/)"
    return 1
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log.run" || true
}

jobs=${FUZZ_JOBS:-$(nproc)}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  (fuzz_one "$t" "$logs/$t" >"$logs/$t.out" 2>&1 && touch "$logs/$t.ok") &
done
wait || true
failed=0
for t in "${targets[@]}"; do
  cat "$logs/$t.out"
  [ -e "$logs/$t.ok" ] || failed=$((failed + 1))
done
if [ "$failed" -gt 0 ]; then
  echo "fuzz/run.sh: $failed of ${#targets[@]} targets failed" >&2
  exit 1
fi
echo "fuzz/run.sh: ${#targets[@]} targets passed"
