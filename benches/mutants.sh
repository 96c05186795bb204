#!/usr/bin/env bash
# Mutation testing with cargo-mutants (issue 18): does a one-line breakage of
# the modules that carry data make some test fail?
#
#   benches/mutants.sh                    # every module (many hours on 2 cores)
#   benches/mutants.sh delivery collector # some modules
#   SHARD=1/4 benches/mutants.sh tools    # a quarter of one module's mutants
#   SINCE=main~3 benches/mutants.sh tools  # only lines changed since a commit
#   benches/mutants.sh --summary          # only print the score table
#   TIER=unit benches/mutants.sh delivery # a first, faster pass: unit tests only
#   TIER=full benches/mutants.sh inject   # re-test the survivors with the suite
#   FILES='src/delivery/mod.rs src/delivery/send.rs' benches/mutants.sh delivery
#   FILES=src/delivery/nats.rs TESTS=nats benches/mutants.sh delivery
#   SLOT=2 TIER=unit benches/mutants.sh collector  # beside another run
#   RE='ensure_tools|nats' TESTS=nats benches/mutants.sh delivery # by name
#                                         # tier 1 with some test targets only
#   FILES=src/tools/reddit.rs TESTS=destinations TEST_FILTER='test(/reddit/)' \
#     benches/mutants.sh tools            # tier 1, one adapter's tests only
#
# Modules: delivery collector consent rules tools inject (src/proxy/inject.rs).
# Settings are in .cargo/mutants.toml (nextest, profile `mutants`).
#
# The mutants are built and tested in a git worktree of HEAD under
# target/mutants/tree (never in this checkout), with its own target dir that
# stays between runs, so each mutant is an incremental rebuild, tested by
# every test target but the headless-browser ones (slow, and they test the
# client script; a first try with per-module test lists reported mutants as
# missed that another module's tests catch). Results accumulate in
# target/mutants/<module>/mutants.out: with --iterate a re-run skips mutants
# already caught and resumes where a run stopped. Delete that folder to start
# a module over.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
export PATH="$PATH:/usr/sbin" # nats-server, for tests/nats.rs
# The current nats-server tests/run.sh installs under this checkout's
# target/tools (the worktree the mutants build in has none of its own).
if [ -z "${TAGPROXY_NATS_SERVER_CURRENT:-}" ] && [ -x "$root/target/tools/nats/bin/nats-server" ]; then
  export TAGPROXY_NATS_SERVER_CURRENT="$root/target/tools/nats/bin/nats-server"
fi

# Every mutant relinks its test binaries, and linking is most of a tier-0
# mutant's time: mold (Debian package `mold`), when installed, links
# several times faster than GNU ld. Only the mutants' own target dir sees
# it, so nothing else is rebuilt.
if [ -z "${RUSTFLAGS:-}" ] && command -v mold >/dev/null; then
  export RUSTFLAGS="-C link-arg=-fuse-ld=mold"
fi

if ! cargo mutants --version >/dev/null 2>&1; then
  echo "benches/mutants.sh: installing cargo-mutants" >&2
  cargo install --locked cargo-mutants
fi

declare -A globs=(
  [delivery]='src/delivery/**/*.rs'
  [collector]='src/collector/**/*.rs'
  [consent]='src/consent/**/*.rs'
  [rules]='src/rules/**/*.rs'
  [tools]='src/tools/**/*.rs'
  [inject]='src/proxy/inject.rs'
)
# Tier 1 (the default): each mutant is tested by the unit tests plus the
# integration tests that exercise that module, so a module takes hours, not
# days. Tier 2 (TIER=full): with --iterate only the mutants tier 1 left
# alive (missed or timed out) are tested again, by every test target but the
# headless-browser ones, so a survivor is one no test in the suite sees.
# Tier 0 (TIER=unit): only the library's unit tests of tier 1's list. Each
# mutant then rebuilds and links one test binary instead of the library and
# up to eight, and runs seconds of tests; what survives goes on to tier 1
# (--iterate keeps the catches), so unit, then 1, then full is a funnel.
declare -A tier1=(
  [delivery]='delivery batching deadletter_cli nats mutation_gaps trail'
  [collector]='collector limits hostile events_api mutation_gaps zaraz_loader'
  [consent]='consent privacy ga4 events_api collector'
  [rules]='triggers adapters collector ga4 secrets deadletter_cli'
  [tools]='adapters destinations ga4 batching hostile secrets privacy'
  [inject]='inject head'
)
# Which unit tests of the library tier 1 runs, as a nextest filterset on
# the test's path (every integration test of the targets above runs).
declare -A tier1_unit=(
  [delivery]='test(/^(delivery|collector|trail)::/)'
  [collector]='test(/^(collector|event|bots)::/)'
  [consent]='test(/^(consent|collector|event)::/)'
  [rules]='test(/^(rules|tools|config)::/)'
  # Not the template parser's fuzzing (30 s a mutant, and it cannot see
  # an adapter's mistake); the hostile-value properties stay.
  [tools]='test(/^(tools|rules|delivery)::/) & !test(/^rules::template::fuzz::/)'
  [inject]='test(/^proxy::/)'
)
# Tier 0 may narrow tier 1's unit tests further: property tests that take
# most of a mutant's test time are left to tier 1, where every survivor
# meets them (the funnel loses nothing, it only moves work).
declare -A tier0_unit=(
  # The hostile-value properties take 20 s a mutant of 25; their named
  # cases stay.
  [tools]='test(/^tools::/) & !test(/hostile_values_stay_values/)'
)
all=(delivery collector consent rules tools inject)
summary_only=0
modules=()
for a in "$@"; do
  case $a in
    --summary) summary_only=1 ;;
    *)
      [ -n "${globs[$a]:-}" ] || { echo "unknown module '$a' (${all[*]})" >&2; exit 2; }
      modules+=("$a")
      ;;
  esac
done
[ ${#modules[@]} -gt 0 ] || modules=("${all[@]}")
shard=()
[ -n "${SHARD:-}" ] && shard=(--shard "$SHARD")
# SINCE=<commit>: the habit for a change: only the mutants on lines changed
# since that commit (cargo-mutants --in-diff), minutes instead of hours.
# Their results go to target/mutants/diff-<module> so the module's own
# tally stays whole.
diff=()
prefix=
if [ -n "${SINCE:-}" ]; then
  mkdir -p target/mutants
  git diff "$SINCE" HEAD -- src >target/mutants/since.diff
  diff=(--in-diff "$root/target/mutants/since.diff")
  prefix=diff-
fi

if [ $summary_only = 0 ]; then
  # SLOT=2: a second worktree and build dir, so two runs (of different
  # modules) can go at once. A tier-0 mutant's build is mostly rustc's
  # single-threaded front end, so on 2 cores two runs nearly double the
  # rate.
  tree=target/mutants/tree${SLOT:-}
  commit=$(git rev-parse HEAD)
  if [ ! -e "$tree/.git" ]; then
    mkdir -p target/mutants
    git worktree add --detach "$tree" "$commit" >/dev/null
  fi
  git -C "$tree" checkout --detach -q -f "$commit"
  git -C "$tree" clean -fdq -e target
  # The tests read ../shared/fixtures from the repository's parent folder.
  [ -e target/mutants/shared ] || ln -s "$root/../shared" target/mutants/shared
  for m in "${modules[@]}"; do
    # OUT: a suffix for the output folder, so a second run of one module
    # (other FILES) can go beside the first; merge its caught.txt into the
    # module's previously_caught.txt afterwards.
    out=$root/target/mutants/$prefix$m${OUT:-}
    mkdir -p "$out"
    # Every test target but the headless-browser ones (slow, and they test
    # the client script): a test anywhere may be the one that sees a mutant.
    # Test targets are chosen with --cargo-arg, which cargo-mutants also
    # gives its build step (`cargo nextest run --no-run`): given only to the
    # test step, every mutant built and linked all ~40 test binaries first.
    if [ "${TIER:-1}" = unit ]; then
      args=(--cargo-arg=--lib --cargo-test-arg=-E "--cargo-test-arg=${tier0_unit[$m]:-${tier1_unit[$m]}}")
    elif [ "${TIER:-1}" = full ]; then
      args=(--cargo-arg=--workspace --cargo-arg=--all-targets
        --cargo-test-arg=-E
        --cargo-test-arg='not (binary(browser) | binary(consent_browser) | binary(meta_browser) | binary(client_triggers))')
    else
      args=(--cargo-arg=--lib)
      for t in ${TESTS:-${tier1[$m]}}; do args+=(--cargo-arg=--test "--cargo-arg=$t"); done
      # TEST_FILTER: a nextest filterset instead, e.g. one adapter's tests
      # (`test(/mixpanel/)`), for a quick first look at its survivors;
      # what it leaves still goes to TIER=full.
      args+=(--cargo-test-arg=-E "--cargo-test-arg=${TEST_FILTER:-not binary_id(tagproxy) | (${tier1_unit[$m]})}")
    fi
    # FILES: a space-separated list of globs within the module.
    files=()
    read -ra pats <<<"${FILES:-${globs[$m]}}"
    for f in "${pats[@]}"; do files+=(-f "$f"); done
    # RE: only the mutants whose name matches a regex (cargo mutants --re).
    [ -n "${RE:-}" ] && files+=(--re "$RE")
    echo "=== $m (tier ${TIER:-1}) at $(git rev-parse --short HEAD) ==="
    (cd "$tree" && CARGO_TARGET_DIR=$root/target/mutants/target${SLOT:-} cargo mutants \
      --in-place --no-shuffle --iterate -o "$out" "${files[@]}" "${shard[@]}" "${diff[@]}" "${args[@]}") || true
    # cargo-mutants' missed/timeout/unviable lists hold only this run's
    # mutants; a run narrowed by FILES or RE would drop the rest of the
    # module's outcomes. Keep every run's in *.all beside them.
    for kind in missed timeout unviable; do
      cat "$out/mutants.out/$kind.txt" "$out/$kind.all" 2>/dev/null | sort -u >"$out/$kind.all.new" || true
      mv "$out/$kind.all.new" "$out/$kind.all"
    done
  done
fi

# Score per module from the accumulated outcomes: caught / (caught + missed
# + timeout); unviable mutants (they do not compile) are listed apart.
printf '| module | mutants | tested | caught | missed | timeout | unviable | score |\n'
printf '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
for m in "${modules[@]}"; do
  dir=target/mutants/$prefix$m/mutants.out
  # Only the mutants of the current code count: a name carries its line,
  # so results from before an edit that moved lines are stale.
  current=$(mktemp)
  cargo mutants --list -f "${globs[$m]}" "${diff[@]}" 2>/dev/null | sort -u >"$current"
  count() { cat "$@" 2>/dev/null | sort -u | comm -12 - "$current" | grep -c . || true; }
  # --iterate carries earlier runs' catches in previously_caught.txt, and
  # the unviable mutants with them (it skips both): those are not catches.
  unviable_list=$(mktemp)
  cat "$dir/unviable.txt" "$dir/../unviable.all" 2>/dev/null | sort -u >"$unviable_list" || true
  caught_list=$(mktemp)
  cat "$dir/caught.txt" "$dir/previously_caught.txt" 2>/dev/null | sort -u |
    comm -23 - "$unviable_list" >"$caught_list" || true
  caught=$(count "$caught_list")
  # Every run's survivors (the *.all lists, see above), less those caught
  # since; a mutant both missed and hung in different runs counts as hung.
  seen_as() { { cat "$@" 2>/dev/null || true; } | sort -u | comm -23 - "$caught_list"; }
  timeout=$(seen_as "$dir/timeout.txt" "$dir/../timeout.all" | count)
  missed=$(seen_as "$dir/missed.txt" "$dir/../missed.all" | comm -23 - <(seen_as "$dir/timeout.txt" "$dir/../timeout.all") | count)
  unviable=$(seen_as "$dir/unviable.txt" "$dir/../unviable.all" |
    comm -23 - <(seen_as "$dir/missed.txt" "$dir/../missed.all" "$dir/timeout.txt" "$dir/../timeout.all") | count)
  rm -f "$caught_list" "$unviable_list"
  total=$(grep -c . "$current" || true)
  rm -f "$current"
  tested=$((caught + missed + timeout))
  score=-
  [ "$tested" -gt 0 ] && score="$((100 * caught / tested))%"
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$m" "$total" "$tested" "$caught" "$missed" "$timeout" "$unviable" "$score"
done
echo
echo "Missed mutants: target/mutants/<module>/mutants.out/missed.txt"
