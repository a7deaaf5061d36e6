#!/usr/bin/env bash
# Counts instructions per schedule operation under callgrind, for the table in
# docs/sched.md. Runs examples/pick_cost at each queue length, weight pattern
# and requeue reason, and divides the inclusive instruction counts of its
# non-inlined wrappers by the number of measured steps:
#   pick, slice (time_slice), preempt (should_preempt), charge, enqueue; sum =
#   enqueue + pick + charge (one context switch's policy work with the basic
#   calls); combined = requeue_and_pick (the same work in one call, from a
#   second run in `combined` mode). The BTreeSet baseline's pop_first and
#   insert fill the pick and enqueue columns.
#
# Usage: crates/sched/scripts/pick_cost.sh [steps [length...]]   (from the workspace root)
# Needs valgrind. Honours CARGO_TARGET_DIR; PICK_COST_BINARY=path measures an
# already built binary instead (e.g. one built from an older tree).
set -euo pipefail
steps=${1:-100000}
shift || true
lengths=("$@")
[[ ${#lengths[@]} -eq 0 ]] && lengths=(2 10 1000 100000)
if [[ -n ${PICK_COST_BINARY:-} ]]; then
  binary=$PICK_COST_BINARY
else
  target=${CARGO_TARGET_DIR:-target}
  cargo build --release -p orrery-sched --example pick_cost >&2
  binary="$target/release/examples/pick_cost"
fi
output=$(mktemp -d)
trap 'rm -rf "$output"' EXIT

# Prints "pick slice preempt charge enqueue combined" per step for one run.
measure() {
  local file="$output/callgrind.out"
  rm -f "$file"
  if ! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='pick_cost::measure*' \
    --callgrind-out-file="$file" "$binary" "$@" >/dev/null 2>&1; then
    echo "- - - - - -"
    return
  fi
  callgrind_annotate --inclusive=yes "$file" 2>/dev/null | awk -v steps="$steps" '
    # Lines look like "21,649,922 (37.14%)  /path/pick_cost.rs:pick_cost::pick [binary]".
    # A function may be listed once per source file it inlines; the first
    # listing, the largest, is the inclusive total.
    /=>/ { next }
    {
      count = $1; gsub(",", "", count)
      if ($0 ~ /pick_cost::(pick|set_pick) / && !("pick" in seen)) seen["pick"] = count
      else if ($0 ~ /pick_cost::time_slice / && !("slice" in seen)) seen["slice"] = count
      else if ($0 ~ /pick_cost::should_preempt / && !("preempt" in seen)) seen["preempt"] = count
      else if ($0 ~ /pick_cost::charge / && !("charge" in seen)) seen["charge"] = count
      else if ($0 ~ /pick_cost::(enqueue|set_insert) / && !("enqueue" in seen)) seen["enqueue"] = count
      else if ($0 ~ /pick_cost::requeue_and_pick / && !("combined" in seen)) seen["combined"] = count
    }
    END {
      n = split("pick slice preempt charge enqueue combined", names, " ")
      for (i = 1; i <= n; i++) {
        name = names[i]
        printf "%s%s", (name in seen ? sprintf("%.0f", seen[name] / steps) : "-"), (i < n ? " " : "\n")
      }
    }'
}

printf '%-12s %-6s %-9s %7s %6s %6s %8s %7s %7s %5s %9s\n' \
  policy weights reason length pick slice preempt charge enqueue sum combined
for policy in fair round-robin btreeset; do
  for weights in equal mixed; do
    [[ $policy == round-robin && $weights == mixed ]] && continue
    for why in preempted yielded; do
      [[ $policy == btreeset && $why == yielded ]] && continue
      for length in "${lengths[@]}"; do
        read -r pick slice preempt charge enqueue _ < <(measure "$policy" "$length" "$steps" "$weights" "$why")
        combined=-
        if [[ $policy != btreeset ]]; then
          read -r _ _ _ _ _ combined < <(measure "$policy" "$length" "$steps" "$weights" "$why" combined)
        fi
        sum=-
        if [[ $pick != - && $enqueue != - ]]; then
          sum=$((pick + enqueue))
          [[ $charge != - ]] && sum=$((sum + charge))
        fi
        reason=$why
        [[ $policy == btreeset ]] && reason=-
        printf '%-12s %-6s %-9s %7d %6s %6s %8s %7s %7s %5s %9s\n' \
          "$policy" "$weights" "$reason" "$length" "$pick" "$slice" "$preempt" "$charge" "$enqueue" "$sum" "$combined"
      done
    done
  done
done
