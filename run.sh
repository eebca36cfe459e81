#!/usr/bin/env bash
# The commands of README.md:
#   ./run.sh demo         set up, then data -> classifier -> explainer -> mask generator -> benchmark -> inference
#   ./run.sh test         set up (both environments), then the test suite
#   ./run.sh review-app   set up the review environment, then the MONAI Label review server (docs/review.md)
# Set-up: a virtual environment in .venv (or $SIMADV_VENV) with requirements.txt, reinstalled only when it changes.
# `test` and `review-app` also set up .venv-review (or $SIMADV_REVIEW_VENV) from requirements-review.txt, installed
# with --no-deps (that file lists every package), likewise only when it changes; its python is exported as
# $SIMADV_REVIEW_PYTHON (tests/test_review_app.py starts the server with it).
# Extra arguments after `demo` go to every stage (e.g. --dataset_dir /data/rsna --datalist /data/rsna/datalist.json
# --output_dir /runs/rsna); after `test` they go to pytest; after `review-app` to `monailabel start_server`
# (e.g. --studies DIR --port 8001 --conf models runs/rsna/models).
set -euo pipefail
cd "$(dirname "$0")"
venv="${SIMADV_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
    echo "$want" > "$stamp"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

setup_review() {
    local rvenv="${SIMADV_REVIEW_VENV:-.venv-review}"
    if [ ! -x "$rvenv/bin/python" ]; then
        python3 -m venv "$rvenv"
    fi
    local rstamp="$rvenv/.requirements.sha256"
    local rwant
    rwant="$(sha256sum requirements-review.txt | cut -d' ' -f1)"
    if [ "$(cat "$rstamp" 2>/dev/null)" != "$rwant" ]; then
        "$rvenv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-review.txt
        echo "$rwant" > "$rstamp"
    fi
    SIMADV_REVIEW_PYTHON="$(cd "$rvenv" && pwd)/bin/python"
    export SIMADV_REVIEW_PYTHON
}

cmd="${1:-}"; shift || true
case "$cmd" in
    demo) exec "$venv/bin/python" -m scripts.pipeline "$@" ;;
    test)
        setup_review
        # the test extra (Quantus, the reference of tests/test_faithfulness.py), --no-deps, only when it changes
        tstamp="$venv/.requirements-test.sha256"
        twant="$(sha256sum requirements-test.txt | cut -d' ' -f1)"
        if [ "$(cat "$tstamp" 2>/dev/null)" != "$twant" ]; then
            "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-test.txt
            echo "$twant" > "$tstamp"
        fi
        exec "$venv/bin/python" -m pytest tests -q "$@" ;;
    review-app)
        setup_review
        studies=()
        if [[ ! " $* " =~ " --studies " && ! " $* " =~ " -s " ]]; then
            # default: the test split of the default data, copied to data/review/ on first use
            if [ ! -f data/review/datastore_v2.json ]; then
                "$venv/bin/python" -m scripts.data.reviewed --seed data/review
            fi
            studies=(--studies data/review)
        fi
        # `monailabel start_server` is `python -m monailabel.main start_server` (the monailabel launcher script
        # would use the first `python` on PATH); 127.0.0.1 unless --host says otherwise.
        exec "$SIMADV_REVIEW_PYTHON" -m monailabel.main start_server --app review_app ${studies[@]+"${studies[@]}"} \
            --host 127.0.0.1 --port 8000 "$@" ;;
    *) echo "usage: ./run.sh demo|test|review-app [args]" >&2; exit 2 ;;
esac
