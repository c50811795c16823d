#!/usr/bin/env bash
# The pipeline's cost per experiment: fresh-clone `make reproduce` (install included) of a
# reference commit and of a candidate, back to back on this machine, and their ratio.
#
#   bash benchmarks/bench_reproduce.sh REF [CANDIDATE]    # CANDIDATE defaults to HEAD
#   BENCH_KEEP=DIR bash benchmarks/bench_reproduce.sh ...  # keep each clone's log and timings/
#
# Each commit is cloned from this repository into a temporary folder and reproduced from
# nothing (venv, install, every DVC stage); the wall time is divided by the number of
# experiments that commit's profile trains. Takes as long as the two reproduces (~30 min on
# 2 cores): not part of `make bench`. Run nothing else heavy meanwhile (the machine is shared).
set -uo pipefail

ref=${1:?usage: bench_reproduce.sh REF [CANDIDATE]}
candidate=${2:-HEAD}
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work=$(mktemp -d -t bench-reproduce-XXXX)
trap 'rm -rf "$work"' EXIT

declare -A per_exp
for rev in "$ref" "$candidate"; do
  sha=$(git -C "$repo" rev-parse --short=7 "$rev") || exit 2
  dir=$work/$sha
  git clone -q "$repo" "$dir" && git -C "$dir" checkout -q "$sha"
  start=$(date +%s)
  (cd "$dir" && make install > "$work/$sha.log" 2>&1 && make reproduce >> "$work/$sha.log" 2>&1)
  rc=$?
  seconds=$(( $(date +%s) - start ))
  installed=$(stat -c %Y "$dir/.venv/.installed" 2>/dev/null || echo "$start")
  # load_config moved from ddrn.config to pipeline.params; the reference may predate that.
  n=$(cd "$dir" && .venv/bin/python -c "
try:
    from pipeline.params import load_config
except ImportError:
    from ddrn.config import load_config
print(len(load_config().experiments_list()))")
  if [ -n "${BENCH_KEEP:-}" ]; then
    mkdir -p "$BENCH_KEEP/$sha" && cp "$work/$sha.log" "$BENCH_KEEP/$sha/" &&
      cp -r "$dir/timings" "$BENCH_KEEP/$sha/" 2>/dev/null
  fi
  if [ "$rc" -ne 0 ]; then
    echo "$sha: make reproduce failed (exit $rc); last lines:"; tail -5 "$work/$sha.log"; exit 1
  fi
  per_exp[$rev]=$(python3 -c "print(f'{$seconds / $n:.1f}')")
  # Where the time went: the install, then each stage as its timings/<stage>.json recorded it
  # (foreach items summed; a stage DVC skipped, e.g. a report whose inputs came out identical,
  # recorded nothing).
  python3 - "$dir/timings" "$(( installed - start ))" <<'PY'
import json, sys
from pathlib import Path
stages = {}
for f in sorted(Path(sys.argv[1]).glob("*.json")):
    doc = json.loads(f.read_text())
    kind = str(doc.get("stage", f.stem)).split("@")[0]
    stages[kind] = stages.get(kind, 0.0) + float(doc.get("seconds", 0.0))
print(f"  install {sys.argv[2]} s; " + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items()))
PY
  # The report header's stage-times row differs on every run (and with it the reports' md5 and
  # size in dvc.lock); every other changed line is a result that did not reproduce.
  changed=$(git -C "$dir" status --porcelain | wc -l)
  beyond=$(( $(git -C "$dir" diff --name-only -I '^\| stage times \|' -I '^ +(md5|size): ' | wc -l)
             + $(git -C "$dir" ls-files --others --exclude-standard | wc -l) ))
  echo "$sha: ${seconds} s for $n experiments = ${per_exp[$rev]} s per experiment;" \
       "git status after: $changed changed paths, $beyond beyond the stage-times row"
done
python3 -c "r = ${per_exp[$ref]} / ${per_exp[$candidate]}; \
print(f'per experiment: {r:.2f}x less time than {\"$ref\"} (goal >= 1.5x)')"
