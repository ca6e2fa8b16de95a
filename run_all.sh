#!/usr/bin/env bash
# Execute every experiment notebook headless with papermill, into a fresh output folder (never over the sources).
#
#   ./run_all.sh            reuse cached (or shipped) models whose settings match, train the others
#   ./run_all.sh --train    retrain every model (reuse_cache=False)
#   ./run_all.sh --quick    the quick settings of rhvae.experiments.registry: the whole pipeline in a few minutes
#
# Options:
#   --only NAME[,NAME]   run only these notebooks (metric, reconstruction, generation_5, generation_7_classes,
#                        augmentation, interpolation, clustering, latent_dimension: the experiments of
#                        rhvae/experiments/registry.py). interpolation and clustering judge the models of
#                        reconstruction and generation_7_classes, and latent_dimension uses those of reconstruction
#                        and generation_5 at d = 2: they run after the other notebooks, and with --train they use the
#                        models this run trained (alone, they retrain those models themselves)
#   --quick              the registry's quick settings (epochs, mcmc_steps, n_samples, …), except those given with -p
#   --out DIR            output folder (default: figures/run_all_MM_DD_YYYY_hh_mm_ss under the repository root)
#   -p NAME VALUE        set a notebook parameter (repeatable). The name must be a parameter of at least one
#                        selected notebook (checked before anything runs; papermill itself only warns); it is
#                        passed to the notebooks that have it. Values are parsed like papermill's -p, except
#                        that a list is accepted as such: -p seeds "[0, 1]". Each value is checked by
#                        rhvae.experiments.runs before anything runs.
#   --jobs N             run up to N notebooks at once (default: 2 on a machine with 2 or more cores, else 1; each
#                        uses `threads` torch threads, default 1,
#                        so --jobs 2 uses both cores of a 2-core machine). With N > 1 the cell outputs go to the
#                        logs only, every notebook runs to its end even if another one fails, and the longest
#                        notebooks start first (rhvae/experiments/registry.py, ``minutes``).
#   --dask ADDRESS       run each notebook as one job of a Dask cluster instead, as --jobs N > 1 does (logs,
#                        summary, exit status): 'local' (a LocalCluster of 2 worker processes x 1 thread on this
#                        machine), 'local:N' (N workers) or a scheduler address such as tcp://host:8786 (its
#                        workers need this package installed, not this disk). A job runs in a temporary folder on
#                        its worker; its executed notebook, log, run folder and trained models come back into the
#                        output folder and the model cache (rhvae/experiments/sweep.py). Not with --jobs.
#   --yes                do not ask before --train (never asked when CI=true or without a terminal)
#   --plan               check the options and print the notebooks in the order they would start, one a line;
#                        run nothing and create no output folder
#   -h, --help           this help
#
# Layout of the output folder: README.md (the results report: claims, verdicts, tables over seeds, figures),
# executed/NAME.ipynb (executed notebooks, with outputs), logs/NAME.log (cell outputs and progress bars), NAME/
# (the notebook's run folder: figures and results.json). A run under figures/ also writes figures/README.md.
# One run per output folder: a second run into an --out that a live run holds is refused (exit 2); the lock
# (flock on DIR/.rhvae.lock, which `python -m rhvae train --out` takes too) ends with the run that holds it.
# Ctrl-C (SIGINT), SIGTERM and SIGHUP, to this script alone or to its whole process group, stop the run the same
# way: every notebook's papermill and kernel stop, no half-written file stays, the summary marks the notebooks
# INTERRUPTED (Ctrl-C) or TERMINATED, and the exit status is 128 + the signal's number.
# Exit status: 0 all fine, 1 a notebook failed (one at a time: stops at the first failure), 2 bad usage (or a
# --dask scheduler that does not answer, or an --out that cannot be written or is in use), 3 all notebooks ran but
# a model's training diverged (see the summary and the results.json of that notebook), 130 interrupted (Ctrl-C),
# 143 terminated (SIGTERM), 129 hung up (SIGHUP).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python}"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die_usage() { echo "run_all.sh: $*" >&2; echo "run 'run_all.sh --help' for the options" >&2; exit 2; }

quick=0
jobs=""
dask=""
train=0
yes=0
plan_only=0
only=""
out=""
params=()
given=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) quick=1 ;;
        --train) train=1 ;;
        --yes) yes=1 ;;
        --plan) plan_only=1 ;;
        --jobs)
            [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || die_usage "--jobs needs a whole number >= 1"
            jobs="$2"; shift ;;
        --dask)
            [[ $# -ge 2 ]] || die_usage "--dask needs an ADDRESS (local, local:N or tcp://host:8786)"
            problem="$("$PYTHON" -m rhvae.experiments.sweep --check --dask "$2" 2>&1)" || die_usage "$problem"
            dask="$2"; shift ;;
        --only)
            [[ $# -ge 2 && -n "${2//[[:space:],]/}" ]] || die_usage "--only needs one or more notebook names"
            only="$2"; shift ;;
        --out)
            [[ $# -ge 2 && -n "${2//[[:space:]]/}" ]] || die_usage "--out needs a folder path"
            out="$2"; shift ;;
        -p|--parameters)
            [[ $# -ge 3 && -n "$2" ]] || die_usage "$1 needs a NAME and a VALUE"
            params+=("$2" "$3"); given+=("$2"); shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die_usage "unknown option '$1'" ;;
    esac
    shift
done
# The experiments in report order, from the one registry (rhvae/experiments/registry.py): read after the options,
# so that a bad option is refused before Python starts (which takes seconds on a loaded machine).
# One Python start for every registry fact of the options' checks: each experiment and whether its models are shipped.
mapfile -t registry_lines < <("$PYTHON" -c 'from rhvae.experiments.registry import REGISTRY
for name, e in REGISTRY.items(): print(name, int(e.shipped))')
ALL_NOTEBOOKS=() SHIPPED=()
for line in "${registry_lines[@]+"${registry_lines[@]}"}"; do
    ALL_NOTEBOOKS+=("${line% *}"); [[ "${line#* }" != 1 ]] || SHIPPED+=("${line% *}")
done
[[ ${#ALL_NOTEBOOKS[@]} -gt 0 ]] || { echo "run_all.sh: cannot read the experiments from rhvae.experiments.registry" >&2; exit 1; }
# two notebooks at a time by default where there are two cores: each runs on one thread, so the numbers are the same
if [[ -z "$jobs" ]]; then
    cores="$(nproc 2>/dev/null || echo 1)"
    if [[ -n "$dask" || $cores -lt 2 ]]; then jobs=1; else jobs=2; fi
fi
[[ -z "$dask" || $jobs -eq 1 ]] || die_usage "--jobs and --dask do not combine (--dask local:N runs N at once)"

notebooks=()
if [[ -n "$only" ]]; then
    IFS=',' read -r -a requested <<< "$only"
    for name in "${requested[@]}"; do
        name="${name//[[:space:]]/}"; name="${name%.ipynb}"; name="${name##*/}"
        [[ -n "$name" ]] || die_usage "empty notebook name in --only '$only'"
        found=0
        for known in "${ALL_NOTEBOOKS[@]}"; do [[ "$name" == "$known" ]] && found=1; done
        [[ $found -eq 1 ]] || die_usage "unknown notebook '$name' in --only (known: ${ALL_NOTEBOOKS[*]})"
        for seen in "${notebooks[@]+"${notebooks[@]}"}"; do
            [[ "$seen" != "$name" ]] || die_usage "notebook '$name' named twice in --only"
        done
        notebooks+=("$name")
    done
elif [[ $train -eq 1 || $quick -eq 1 ]]; then
    notebooks=("${ALL_NOTEBOOKS[@]}")
else
    # default mode reproduces from shipped models: an experiment whose models are not shipped yet would train
    # them for half an hour, so it runs only when named with --only (rhvae/experiments/registry.py, ``shipped``)
    notebooks=("${SHIPPED[@]+"${SHIPPED[@]}"}")
    for name in "${ALL_NOTEBOOKS[@]}"; do
        [[ " ${notebooks[*]} " == *" $name "* ]] || echo "run_all.sh: skipping '$name': its models are not shipped" \
            "yet (train them with ./run_all.sh --only $name, or everything with --train)"
    done
fi

# An analysis notebook (registry ``analyses``: interpolation, clustering, latent_dimension) judges the models of
# other experiments. It runs after the notebooks of this run (so that it loads the models they trained instead of
# training the same ones beside them), and with --train it retrains only the models of experiments that are not part
# of this run. Where this run trains nothing (no --train, --quick or -p, and every model it uses is shipped: the
# default run), there is nothing to wait for: the analyses load the same shipped files, and start with the others.
# One Python start prints the analyses (NAME fed|alone), whether they wait, and the start order of notebooks run at
# once: longest first (rhvae/experiments/registry.py, ``minutes``), so that the run does not end with a long notebook
# that started when the short ones were done; the analyses after the others when they wait. Notebooks are collected
# and reported in report order.
may_train=0; [[ $train -eq 0 && $quick -eq 0 && ${#params[@]} -eq 0 ]] || may_train=1
cost_mode=default; [[ $train -eq 0 ]] || cost_mode=train
mapfile -t order_lines < <("$PYTHON" -c 'import sys
from rhvae.experiments.registry import REGISTRY, longest_first
mode, may_train, chosen = sys.argv[1], sys.argv[2] == "1", sys.argv[3:]
analyses = [n for n in REGISTRY if REGISTRY[n].analyses and n in chosen]
for name in analyses:
    print("analysis", name, "fed" if set(REGISTRY[name].analyses) <= set(chosen) else "alone")
together = not may_train and all(REGISTRY[n].shipped for c in chosen for n in (c, *REGISTRY[c].analyses))
first = chosen if together else [n for n in chosen if n not in analyses]
for name in longest_first(first, mode) + ([] if together else analyses):
    print("start", name)
print("wait", int(not together))' "$cost_mode" "$may_train" "${notebooks[@]}")
analyses=() fed=() sorted_order=() analyses_wait=""
for line in "${order_lines[@]+"${order_lines[@]}"}"; do
    read -r kind name how <<< "$line"
    case "$kind" in
        analysis) analyses+=("$name"); [[ "$how" != fed ]] || fed+=("$name") ;;
        start) sorted_order+=("$name") ;;
        wait) analyses_wait="$name" ;;
    esac
done
[[ -n "$analyses_wait" ]] || { echo "run_all.sh: cannot order the notebooks" >&2; exit 1; }
is_in() { local x="$1"; shift; [[ " $* " == *" $x "* ]]; }
primaries=()
for nb in "${notebooks[@]}"; do is_in "$nb" "${analyses[@]+"${analyses[@]}"}" || primaries+=("$nb"); done
notebooks=("${primaries[@]+"${primaries[@]}"}" "${analyses[@]+"${analyses[@]}"}")

# Check -p names against each notebook's parameters cell and values against their ranges, before running anything
# (rhvae/experiments/notebook_command.py). Prints, per notebook, its "-p NAME VALUE" arguments: NAME<TAB>args.
pflags=()
for ((i = 0; i < ${#params[@]}; i += 2)); do pflags+=(-p "${params[i]}" "${params[i+1]}"); done
plan="$("$PYTHON" -m rhvae.experiments.notebook_command plan "${notebooks[@]}" "${pflags[@]+"${pflags[@]}"}")" || { echo "run_all.sh: bad -p parameter (nothing was run)" >&2; exit 2; }

start_order=("${notebooks[@]}")
if [[ $jobs -gt 1 || -n "$dask" ]]; then
    start_order=("${sorted_order[@]+"${sorted_order[@]}"}")
    [[ ${#start_order[@]} -eq ${#notebooks[@]} ]] || { echo "run_all.sh: cannot order the notebooks" >&2; exit 1; }
    plan="$(for nb in "${start_order[@]}"; do grep -P "^$nb\t" <<< "$plan"; done)"
fi
if [[ $plan_only -eq 1 ]]; then printf '%s\n' "${start_order[@]}"; exit 0; fi  # --plan: the start order, nothing run

if [[ $train -eq 1 && $yes -eq 0 && "${CI:-}" != "true" && -t 0 ]]; then
    read -r -p "--train retrains every model (paper mode, 3 seeds: about 55 min with --jobs 2 on 2 cores). Continue? [y/N] " answer
    [[ "$answer" == [yY]* ]] || { echo "aborted"; exit 2; }
fi

# The output folder: --out, or a new folder under figures/ that this run creates itself (mkdir without -p fails
# when it exists, so two runs started in the same second get two folders).
stamp="$(date +%m_%d_%Y_%H_%M_%S)"
if [[ -z "$out" ]]; then
    mkdir -p "$ROOT/figures" 2>/dev/null || die_usage "cannot create $ROOT/figures for the output (use --out)"
    out="$ROOT/figures/run_all_$stamp"
    n=1
    until mkdir "$out" 2>/dev/null; do
        n=$((n + 1)); out="$ROOT/figures/run_all_${stamp}_$n"
        [[ $n -lt 100 ]] || die_usage "cannot create an output folder under $ROOT/figures (use --out)"
    done
elif [[ "$out" != /* ]]; then
    out="$ROOT/$out"
fi
[[ ! -e "$out" || -d "$out" ]] || die_usage "--out $out is an existing file, not a folder"
problem="$(mkdir -p "$out/executed" "$out/logs" 2>&1 && touch "$out/logs/.writable" 2>&1)" \
    || die_usage "--out $out cannot be written: ${problem##*: }"
rm -f "$out/logs/.writable"
# the lock's file descriptor is inherited by the notebook runners (not by their papermills): it is released when
# this shell and every runner have ended, so orphans, were there any, would still hold it
lock="$out/.rhvae.lock"
if command -v flock >/dev/null 2>&1; then
    exec {lock_fd}>>"$lock"
    flock -n "$lock_fd" || die_usage "--out $out is in use by $(head -n 1 "$lock" 2>/dev/null || echo 'another run'):" \
        "wait for it to end or choose another --out"
    echo "run_all.sh (pid $$, since $(date +%H:%M:%S))" > "$lock"
else
    echo "run_all.sh: flock is not installed: two runs into $out would not be told apart" >&2
fi

mode="default (reuse cached models when settings match)"
common=(-p interactive False)
# the parameters given with -p: with --quick they keep their values (rhvae.experiments.runs.validate_parameters)
RHVAE_GIVEN_PARAMETERS="$(IFS=,; echo "${given[*]+"${given[*]}"}")"
export RHVAE_GIVEN_PARAMETERS
if [[ $quick -eq 1 ]]; then common+=(-p quick True); mode="quick"; fi
fed_common=("${common[@]}")  # an analysis whose experiments run first: it loads the models they just trained
if [[ $train -eq 1 ]]; then common+=(-p reuse_cache False); mode="$mode, retrain everything"; fi
echo "run_all.sh: mode: $mode; output folder: $out"

rows=()
diverged=0
summary() {
    echo
    printf '%-22s %-9s %10s  %s\n' "notebook" "status" "duration" "output folder"
    printf '%-22s %-9s %10s  %s\n' "--------" "------" "--------" "-------------"
    for row in "${rows[@]+"${rows[@]}"}"; do
        IFS='|' read -r nb status secs folder <<< "$row"
        printf '%-22s %-9s %9ss  %s\n' "$nb" "$status" "$secs" "$folder"
    done
}

# Run one notebook (rhvae/experiments/notebook_command.py), as a job of this shell (started with &): its papermill
# exit status and duration go to logs/NAME.rc. exec makes the job's process the runner itself, so that a signal
# forwarded to the job reaches the runner, which stops its papermill. Cell outputs are shown (and logged) when
# notebooks run one at a time, logged only when concurrent.
run_notebook() {
    local nb="$1" line echo_flag=() args=("${common[@]}")
    line="$(grep -P "^$nb\t" <<< "$plan" || true)"
    [[ $jobs -gt 1 ]] || echo_flag=(--echo)
    ! is_in "$nb" "${fed[@]+"${fed[@]}"}" || args=("${fed_common[@]}")
    exec "$PYTHON" -m rhvae.experiments.notebook_command run --out "$out" "${echo_flag[@]+"${echo_flag[@]}"}" \
        --own="${line#*$'\t'}" "$nb" -- "${args[@]}"
}

# Run the named notebooks at once as jobs of the --dask cluster (rhvae/experiments/sweep.py, which writes the files
# run_notebook writes), with the arguments run_notebook would give the first of them (all share them); none: nothing.
# Returns the sweep's exit status (2: the cluster cannot be reached).
sweep_round() {
    [[ $# -gt 0 ]] || return 0
    local nb lines args=("${common[@]}") pid status=0
    ! is_in "$1" "${fed[@]+"${fed[@]}"}" || args=("${fed_common[@]}")
    lines="$(for nb in "$@"; do grep -P "^$nb\t" <<< "$plan" || true; done)"
    "$PYTHON" -m rhvae.experiments.sweep --dask "$dask" --out "$out" --notebooks "$ROOT/notebooks" -- "${args[@]}" \
        <<< "$lines" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do wait "$pid" && status=0 || status=$?; done  # a trapped signal ends a wait
    return "$status"
}

# Add the summary row of a finished notebook; 1 if it failed, 128 + n if the signal n stopped it.
collect() {
    local nb="$1" folder="$out/$1" rc=1 secs=0 status
    [[ ! -f "$out/logs/$nb.rc" ]] || read -r rc secs < "$out/logs/$nb.rc"
    if [[ $rc -eq 130 || $rc -eq 143 || $rc -eq 129 ]]; then
        status=TERMINATED; [[ $rc -ne 130 ]] || status=INTERRUPTED
        rows+=("$nb|$status|$secs|$folder")
        echo "run_all.sh: notebook '$nb' ${status,,} (exit $rc) after ${secs}s; log: $out/logs/$nb.log" >&2
        return "$rc"
    fi
    if [[ $rc -ne 0 ]]; then
        rows+=("$nb|FAILED|$secs|$folder")
        echo "run_all.sh: notebook '$nb' FAILED (papermill exit $rc) after ${secs}s." >&2
        [[ ! -f "$out/executed/$nb.ipynb" ]] || echo "  partial executed notebook: $out/executed/$nb.ipynb" >&2
        echo "  log: $out/logs/$nb.log" >&2
        echo "  run folder (figures written so far): $folder" >&2
        return 1
    fi
    status="$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("status","?"))' "$folder/results.json" 2>/dev/null || echo "no-results")"
    if [[ "$status" != "ok" ]]; then
        diverged=1
        echo "run_all.sh: notebook '$nb' finished with status '$status' (see $folder/results.json)" >&2
    fi
    rows+=("$nb|$status|$secs|$folder")
}

# Signals. Background jobs start with SIGINT ignored, and a shell runs a trap only once the foreground command has
# ended: so every notebook and sweep runs as a job and the shell waits for it (a wait ends when a trapped signal
# arrives). On Ctrl-C, SIGTERM or SIGHUP the shell forwards the signal to its jobs once (the runners stop their
# papermills, which stop their kernels, and write their .rc), starts no other notebook, waits for the jobs to end,
# and exits with 128 + the signal's number after the summary. Sent to the whole group, the signal reaches every
# process at once; the runners then only clean up.
stopped=0
on_signal() {
    [[ $stopped -eq 0 ]] || return 0
    stopped=$((128 + $2))
    kill -"$1" $(jobs -rp) 2>/dev/null || true
}
trap 'on_signal INT 2' INT
trap 'on_signal TERM 15' TERM
trap 'on_signal HUP 1' HUP
wait_for_jobs() { while [[ -n "$(jobs -rp)" ]]; do wait || true; done; }
end_stopped() {
    wait_for_jobs
    local word=TERMINATED; [[ $stopped -ne 130 ]] || word=INTERRUPTED
    for nb in "${notebooks[@]}"; do
        if [[ -f "$out/logs/$nb.rc" ]]; then
            collect "$nb" || true
        elif is_in "$nb" "${started[@]+"${started[@]}"}"; then  # its runner was stopped before it began the notebook
            rows+=("$nb|$word|0|$out/$nb")
        fi
    done
    summary
    local how=interrupted; [[ $stopped -eq 130 ]] || how="terminated (exit $stopped)"
    echo "run_all.sh: $how; the notebooks that had not started were not run" >&2
    exit "$stopped"
}

failed=0
started=()
if [[ $jobs -eq 1 && -z "$dask" ]]; then
    for nb in "${notebooks[@]}"; do
        echo
        echo "=== $nb -> $out/$nb (log: $out/logs/$nb.log)"
        started+=("$nb")
        run_notebook "$nb" &
        wait_for_jobs
        [[ $stopped -eq 0 ]] || end_stopped
        collect "$nb" || { status=$?; summary; exit $((status > 128 ? status : 1)); }  # stop at the first failure
    done
else
    if [[ -n "$dask" ]]; then
        # one job per notebook on the cluster (rhvae/experiments/sweep.py), in rounds: the experiments, then the
        # analyses whose experiments ran, then the others (see above); each round runs its notebooks at once
        # (one round of all when the analyses need not wait)
        alone=()
        for nb in "${analyses[@]+"${analyses[@]}"}"; do is_in "$nb" "${fed[@]+"${fed[@]}"}" || alone+=("$nb"); done
        if [[ $analyses_wait -eq 0 ]]; then
            sweep_round "${start_order[@]}" && status=0 || status=$?
        else
            sweep_round "${start_order[@]:0:${#primaries[@]}}" && sweep_round "${fed[@]+"${fed[@]}"}" \
                && sweep_round "${alone[@]+"${alone[@]}"}" && status=0 || status=$?
        fi
        [[ $stopped -eq 0 ]] || end_stopped
        [[ $status -eq 0 ]] || exit "$status"
    else
        for nb in "${start_order[@]}"; do
            while [[ $stopped -eq 0 && $(jobs -rp | wc -l) -ge $jobs ]]; do wait -n || true; done
            if [[ $analyses_wait -eq 1 && "$nb" == "${analyses[0]:-}" ]]; then  # (last in start_order) when the rest is done
                while [[ $stopped -eq 0 && -n "$(jobs -rp)" ]]; do wait -n || true; done
            fi
            [[ $stopped -eq 0 ]] || break
            echo "=== $nb -> $out/$nb (log: $out/logs/$nb.log), started $(date +%H:%M:%S)"
            started+=("$nb")
            run_notebook "$nb" &
        done
        wait_for_jobs
        [[ $stopped -eq 0 ]] || end_stopped
    fi
    for nb in "${notebooks[@]}"; do collect "$nb" || failed=1; done
    if [[ $failed -ne 0 ]]; then summary; exit 1; fi
fi

summary
echo
echo "executed notebooks: $out/executed"
# The results report (python -m rhvae report); a run under figures/ also becomes figures/README.md, the latest.
latest=()
if [[ "$out" == "$ROOT/figures/"* ]]; then latest=(--latest "$ROOT/figures/README.md"); fi
"$PYTHON" -m rhvae report "$out" "${latest[@]+"${latest[@]}"}" || echo "run_all.sh: the report could not be written" >&2
if [[ $diverged -ne 0 ]]; then
    echo "run_all.sh: some models diverged or a notebook wrote no results (status column); exit 3" >&2
    exit 3
fi
