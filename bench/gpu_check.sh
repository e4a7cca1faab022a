#!/usr/bin/env bash
# The CUDA path on one GPU in one command, within 8 minutes (issue 14). See bench/gpu_check.md.
#
#   bench/gpu_check.sh OUT                    # on the GPU machine (gpu_bundle/ carried along)
#   bench/gpu_check.sh OUT --cpu-rehearsal    # here: shrunken sizes, no CUDA, no network
#
# Parts, each in its own process under its own time limit, so one failing or hanging part never
# stops the others: install, env, tests + tiny (at the same time on the GPU machine), step,
# loader, evidence. Each writes OUT/<part>/ (log.txt, key.txt, status.tsv, its results); the
# summary table (part, status, key figure, seconds) is printed at the end and written to
# OUT/summary.md. Exit status 0 when no part failed or timed out.
#
# Environment: PYTHON (interpreter; default the first of python3/python that imports torch),
# GPU_CHECK_BUDGET_S (total seconds: 450 on the GPU, 300 in the rehearsal), GPU_CHECK_WORK
# (scratch space, default /tmp/progvid_gpu_check), GPU_CHECK_PARTS (run only these, comma
# separated), GPU_CHECK_FAIL (parts forced to fail, comma separated: tests the isolation).
set -uo pipefail

SELF=$(readlink -f "$0")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)
PARTS=(install env tests tiny step loader evidence)

usage() { echo "usage: bench/gpu_check.sh OUT [--cpu-rehearsal]" >&2; exit 2; }

# ------------------------------------------------------------------------------------------
# the install part (bash; run as `gpu_check.sh --part install` under its time limit)
# ------------------------------------------------------------------------------------------
part_install() {
  local dir="$OUT/install" bundle="$ROOT/gpu_bundle" reqs pip_user_flags="" mode py pip
  mapfile -t reqs < <("$PY" "$ROOT/bench/gpu_check.py" reqs)
  local nwheels
  nwheels=$(ls "$bundle"/*.whl 2>/dev/null | wc -l)
  if [ "$REHEARSAL" = 1 ]; then
    if [ "$nwheels" -eq 0 ]; then
      echo "rehearsal: no gpu_bundle/ here (make gpu-bundle); nothing to install" > "$dir/key.txt"
      exit 3
    fi
    # the same resolution the GPU machine does, without installing anything
    if "$PY" -m pip install --dry-run --no-index --find-links "$bundle" "${reqs[@]}" \
        > "$dir/pip.log" 2>&1; then
      local would
      would=$(grep -h "^Would install" "$dir/pip.log" | cut -c15- || true)
      echo "rehearsal: pip install --dry-run --no-index --find-links gpu_bundle ($nwheels wheels)" \
        "resolves ${#reqs[@]} requirements; would install: ${would:-nothing (all present here)}" \
        > "$dir/key.txt"
      exit 0
    fi
    echo "rehearsal: pip --dry-run --no-index against gpu_bundle/ failed: $(tail -n 1 "$dir/pip.log")" \
      > "$dir/key.txt"
    exit 1
  fi
  if [ "$nwheels" -eq 0 ]; then
    echo "no gpu_bundle/ (run make gpu-bundle and carry gpu_bundle): nothing installed" > "$dir/key.txt"
    exit 1
  fi
  # Where to install: the machine's torch and transformers must stay the ones in use.
  py="$PY"
  if "$PY" -c 'import sys; sys.exit(0 if sys.prefix != sys.base_prefix else 1)'; then
    mode="the machine's virtualenv"                   # a throwaway machine: install into it
  elif "$PY" -m venv --system-site-packages "$WORK/venv" >> "$dir/pip.log" 2>&1 \
      && "$WORK/venv/bin/python" -c 'import torch' >> "$dir/pip.log" 2>&1; then
    mode="venv --system-site-packages"; py="$WORK/venv/bin/python"
  else
    mode="pip --user"; export PYTHONUSERBASE="$WORK/userbase"; pip_user_flags="--user"
    if "$PY" -m pip install --help 2>/dev/null | grep -q -- --break-system-packages; then
      pip_user_flags="--user --break-system-packages"
    fi
  fi
  pip=("$py" -m pip install --no-index --find-links "$bundle" --disable-pip-version-check $pip_user_flags)
  local failed=() extra_path=""
  echo "mode: $mode; requirements: ${reqs[*]}" >> "$dir/pip.log"
  if ! "${pip[@]}" "${reqs[@]}" >> "$dir/pip.log" 2>&1; then
    for r in "${reqs[@]}"; do                      # one by one: install what can be installed
      "${pip[@]}" "$r" >> "$dir/pip.log" 2>&1 || failed+=("$r")
    done
  fi
  if [ "${#failed[@]}" -gt 0 ] && [ "$mode" = "pip --user" ]; then
    # last resort: every bundled wheel, no resolution, into a folder on PYTHONPATH
    mode="pip --target (fallback)"; extra_path="$WORK/site"
    "$PY" -m pip install --no-index --no-deps --target "$WORK/site" "$bundle"/*.whl \
      >> "$dir/pip.log" 2>&1 && failed=()
  fi
  local progvid_how="installed --no-deps (editable)"
  if ! "${pip[@]}" --no-deps -e "$ROOT" >> "$dir/pip.log" 2>&1; then
    if ! "${pip[@]}" --no-deps --no-build-isolation -e "$ROOT" >> "$dir/pip.log" 2>&1; then
      progvid_how="NOT installed (runs from src/ on PYTHONPATH)"
    fi
  fi
  {
    echo "export PYTHON='$py'"
    [ "$mode" = "pip --user" ] && echo "export PYTHONUSERBASE='$WORK/userbase'"
    [ -n "$extra_path" ] && echo "export PYTHONPATH='$extra_path':\"\$PYTHONPATH\""
  } > "$WORK/env.sh"
  local installed
  installed=$(grep -h "^Successfully installed" "$dir/pip.log" | cut -c23- | tr '\n' ' ')
  if [ "${#failed[@]}" -gt 0 ]; then
    echo "$mode: could not install ${failed[*]} from gpu_bundle/ | installed: ${installed:-none}" \
      "| progvid $progvid_how" > "$dir/key.txt"
    exit 1
  fi
  echo "$mode, --no-index from gpu_bundle/ ($nwheels wheels): ${installed:-nothing needed}" \
    "| progvid $progvid_how" > "$dir/key.txt"
  exit 0
}

if [ "${1:-}" = "--part" ]; then      # internal: one bash part, environment set by the caller
  "part_$2"
  exit $?
fi

# ------------------------------------------------------------------------------------------
# arguments, interpreter, budget
# ------------------------------------------------------------------------------------------
[ $# -ge 1 ] || usage
OUT=$1; shift
REHEARSAL=0
for a in "$@"; do
  case "$a" in
    --cpu-rehearsal) REHEARSAL=1 ;;
    *) usage ;;
  esac
done
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
cd "$ROOT" || exit 2
WORK=${GPU_CHECK_WORK:-/tmp/progvid_gpu_check}
mkdir -p "$WORK"
rm -f "$WORK/env.sh"
if [ "$REHEARSAL" = 1 ]; then
  BUDGET=${GPU_CHECK_BUDGET_S:-300}; RH=--rehearsal
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # tiny models on a shared 2-core machine
else
  BUDGET=${GPU_CHECK_BUDGET_S:-450}; RH=""
fi
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3 python; do
    if command -v "$c" > /dev/null && "$c" -c 'import torch' 2> /dev/null; then PY=$c; break; fi
  done
  PY=${PY:-python3}
fi
export OUT ROOT WORK REHEARSAL PY
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"   # this tree's progvid, installed or not
export PYTHONUNBUFFERED=1 GPU_CHECK_WORK="$WORK"
START=$(date +%s)
echo "gpu_check: $( [ "$REHEARSAL" = 1 ] && echo "CPU REHEARSAL" || echo "GPU" ), budget ${BUDGET}s," \
  "python $PY, OUT $OUT, started $(date -u '+%Y-%m-%d %H:%M:%S') UTC"

in_list() {  # NAME "a,b,c"
  case ",$2," in *",$1,"*) return 0 ;; *) return 1 ;; esac
}

# run_part NAME CAP RESERVE CMD...: CAP = the part's own limit, RESERVE = seconds kept for the
# parts after it; the limit is min(CAP, what is left of the budget less RESERVE).
run_part() {
  local name=$1 cap=$2 reserve=$3; shift 3
  local dir="$OUT/$name" status key rc t0 left t
  mkdir -p "$dir"
  rm -f "$dir/key.txt" "$dir/status.tsv"
  t0=$(date +%s)
  left=$(( BUDGET - (t0 - START) - reserve ))
  t=$(( cap < left ? cap : left ))
  if [ -n "${GPU_CHECK_PARTS:-}" ] && ! in_list "$name" "$GPU_CHECK_PARTS"; then
    status=SKIP; key="not selected (GPU_CHECK_PARTS=$GPU_CHECK_PARTS)"
  elif [ "$t" -lt 5 ]; then
    status=SKIP; key="no time left (${BUDGET}s budget spent)"
  else
    if in_list "$name" "${GPU_CHECK_FAIL:-}"; then
      set -- bash -c 'echo "forced failure (GPU_CHECK_FAIL)" | tee "$0/key.txt"; exit 1' "$dir"
    fi
    echo "-- $name: start (limit ${t}s)"
    GPU_CHECK_PART_BUDGET=$t timeout -k 15 "$t" "$@" > "$dir/log.txt" 2>&1
    rc=$?
    case $rc in
      0) status=PASS ;;
      3) status=SKIP ;;
      124|137) status=TIMEOUT ;;
      *) status=FAIL ;;
    esac
    key=$(head -n 1 "$dir/key.txt" 2> /dev/null)
    if [ -z "$key" ]; then
      key="exit $rc; last log line: $(grep -v '^\s*$' "$dir/log.txt" | tail -n 1 | cut -c1-200)"
    fi
    [ "$status" = TIMEOUT ] && key="killed at its ${t}s limit | $key"
    if [ "$status" = FAIL ] || [ "$status" = TIMEOUT ]; then
      echo "   last lines of $name/log.txt:"; tail -n 6 "$dir/log.txt" | cut -c1-300 | sed 's/^/   | /'
    fi
  fi
  key=$(echo "$key" | tr '\t|\n' ' ; ' | cut -c1-1500)
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$key" "$(( $(date +%s) - t0 ))" > "$dir/status.tsv"
  echo "== $name: $status ($(( $(date +%s) - t0 ))s) $key"
}

# ------------------------------------------------------------------------------------------
# the parts
# ------------------------------------------------------------------------------------------
run_part install 90 200 bash "$SELF" --part install
# shellcheck disable=SC1091
[ -f "$WORK/env.sh" ] && . "$WORK/env.sh" && export PYTHON PYTHONUSERBASE PYTHONPATH 2> /dev/null
PY=${PYTHON:-$PY}; export PY
run_part env 60 200 "$PY" "$ROOT/bench/gpu_check.py" env --out "$OUT/env" $RH
if [ "$REHEARSAL" = 1 ]; then      # two cores: one part at a time
  run_part tests 120 60 "$PY" "$ROOT/bench/gpu_check.py" tests --out "$OUT/tests" $RH
  run_part tiny 150 60 "$PY" "$ROOT/bench/gpu_check.py" tiny --out "$OUT/tiny" $RH
else                               # 16 cores: the CPU-side tests beside the tiny GPU runs
  run_part tests 150 110 "$PY" "$ROOT/bench/gpu_check.py" tests --out "$OUT/tests" $RH &
  run_part tiny 180 110 "$PY" "$ROOT/bench/gpu_check.py" tiny --out "$OUT/tiny" $RH &
  wait
fi
run_part step 150 50 "$PY" "$ROOT/bench/gpu_check.py" step --out "$OUT/step" $RH
run_part loader 120 0 "$PY" "$ROOT/bench/gpu_check.py" loader --out "$OUT/loader" $RH --step-json "$OUT/step/step.json"
run_part evidence 600 0 "$PY" "$ROOT/bench/gpu_check.py" evidence --out "$OUT/evidence" $RH

# ------------------------------------------------------------------------------------------
# summary
# ------------------------------------------------------------------------------------------
machine=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")' 2> /dev/null || echo "?")
commit=$(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo "n/a (no git)")
{
  echo "# progvid GPU check $( [ "$REHEARSAL" = 1 ] && echo "(CPU REHEARSAL: not GPU figures)" )"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S') UTC; total $(( $(date +%s) - START )) s of a ${BUDGET} s budget"
  echo "- machine: $(hostname), $(getconf _NPROCESSORS_ONLN) CPUs, $machine; python $PY"
  echo "- command: bench/gpu_check.sh OUT $( [ "$REHEARSAL" = 1 ] && echo "--cpu-rehearsal" ); tree at commit $commit"
  echo
  echo "| part | status | key figure | seconds |"
  echo "|---|---|---|---|"
  for p in "${PARTS[@]}"; do
    if [ -f "$OUT/$p/status.tsv" ]; then
      IFS=$'\t' read -r n s k secs < "$OUT/$p/status.tsv"
      echo "| $n | $s | $k | $secs |"
    else
      echo "| $p | FAIL | no status written (the part's runner died) | |"
    fi
  done
} > "$OUT/summary.md"
echo
cat "$OUT/summary.md"
# The device tool brings back at most 8 files from $OUT: every part's folder goes into one
# archive beside summary.md (GPU_CHECK_PACK=0 keeps the folders, as the rehearsal test does).
if [ "${GPU_CHECK_PACK:-1}" != 0 ]; then
  parts_present=()
  for p in "${PARTS[@]}"; do [ -d "$OUT/$p" ] && parts_present+=("$p"); done
  if [ ${#parts_present[@]} -gt 0 ] && tar -czf "$WORK/parts.tar.gz" -C "$OUT" "${parts_present[@]}"; then
    for p in "${parts_present[@]}"; do rm -rf "${OUT:?}/$p"; done
    mv "$WORK/parts.tar.gz" "$OUT/parts.tar.gz"
    echo "every part's files: $OUT/parts.tar.gz ($(du -h "$OUT/parts.tar.gz" | cut -f1))"
  fi
fi
if grep -qE '^\| [a-z]+ \| (FAIL|TIMEOUT) \|' "$OUT/summary.md"; then exit 1; fi
exit 0
