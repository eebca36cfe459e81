#!/usr/bin/env bash
# The two Quick start commands of README.md:
#   ./run.sh demo   set up, then data -> classifier -> explainer -> mask generator -> benchmark -> inference
#   ./run.sh test   set up, then the test suite
# Set-up: a virtual environment in .venv (or $SIMADV_VENV) with requirements.txt, reinstalled only when it changes.
# Extra arguments after `demo` go to every stage (e.g. --dataset_dir /data/rsna --datalist /data/rsna/datalist.json
# --output_dir /runs/rsna); after `test` they go to pytest.
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
cmd="${1:-}"; shift || true
case "$cmd" in
    demo) exec "$venv/bin/python" -m scripts.pipeline "$@" ;;
    test) exec "$venv/bin/python" -m pytest tests -q "$@" ;;
    *) echo "usage: ./run.sh demo|test [args]" >&2; exit 2 ;;
esac
