#!/usr/bin/env bash
# The commands of README.md:
#   ./run.sh demo         set up, then data -> classifier -> explainer -> mask generator -> benchmark -> inference
#   ./run.sh test         set up (both environments), then the test suite
#   ./run.sh review-app   set up the review environment, then the MONAI Label review server (docs/review.md)
#   ./run.sh review-pacs  the same on a PACS: Orthanc + the default data as DICOM + the app + OHIF (Ctrl-C stops all)
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

# Orthanc (+ its DICOMweb plugin) and Chromium for the PACS review loop (docs/review.md, "PACS"): Debian packages,
# installed when missing and when we may (root); `apt-get update` once, only if an install is needed.
setup_pacs() {
    local missing=()
    [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
    [ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
    if [ "${1:-}" = "browser" ]; then command -v chromium >/dev/null || missing+=(chromium); fi
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "run.sh: installing ${missing[*]} (apt-get)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
            apt-get update -q >/dev/null && \
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
    else
        echo "run.sh: ${missing[*]} missing; install them: sudo apt-get install ${missing[*]}" >&2
        return 1
    fi
}

# The whole PACS loop: Orthanc on 127.0.0.1:${SIMADV_PACS_PORT:-8042} (storage data/pacs/, user `reviewer`, a password
# made once in data/pacs/password), the default test split as DICOM (data/review-dicom/), the review app on it, the
# viewer URL; Ctrl-C stops both.
review_pacs() {
    setup_review
    setup_pacs || exit 1
    local port="${SIMADV_PACS_PORT:-8042}" dir=data/pacs dicoms=data/review-dicom
    mkdir -p "$dir/db"
    [ -s "$dir/password" ] || (umask 077; "$venv/bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))' > "$dir/password")
    local password; password="$(cat "$dir/password")"
    cat > "$dir/orthanc.json" <<JSON
{"Name": "simadv-review", "StorageDirectory": "$PWD/$dir/db", "IndexDirectory": "$PWD/$dir/db",
 "HttpPort": $port, "DicomServerEnabled": false, "RemoteAccessAllowed": false, "AuthenticationEnabled": true,
 "RegisteredUsers": {"reviewer": "$password"}, "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
 "DicomWeb": {"Enable": true, "Root": "/dicom-web/"}}
JSON
    chmod 600 "$dir/orthanc.json"
    if [ ! -f "$dicoms/datalist.json" ]; then
        "$venv/bin/python" -c 'from scripts.data.synthetic import ensure_synthetic_dataset as e; e("data/synthetic", "data/synthetic/datalist.json")'
        "$venv/bin/python" -m scripts.data.dicom_export --datalist data/synthetic/datalist.json --out "$dicoms"
    fi
    orthanc_pid="" app_pid=""  # global: the EXIT trap runs after this function returned
    cleanup() {
        trap - INT TERM EXIT
        [ -n "${app_pid:-}" ] && kill "$app_pid" 2>/dev/null
        [ -n "${orthanc_pid:-}" ] && kill "$orthanc_pid" 2>/dev/null
        wait 2>/dev/null
        echo "run.sh: stopped Orthanc and the review app" >&2
    }
    trap cleanup INT TERM EXIT
    /usr/sbin/Orthanc "$dir/orthanc.json" > "$dir/orthanc.log" 2>&1 &
    orthanc_pid=$!
    local url="http://127.0.0.1:$port/dicom-web"
    export MONAI_LABEL_DICOMWEB_USERNAME=reviewer MONAI_LABEL_DICOMWEB_PASSWORD="$password"
    for _ in $(seq 1 100); do
        kill -0 "$orthanc_pid" 2>/dev/null || { echo "run.sh: Orthanc stopped, see $dir/orthanc.log" >&2; exit 1; }
        "$venv/bin/python" -c "import urllib.request as u,sys; sys.exit(0 if u.urlopen(u.Request('$url/studies', headers={'Authorization': 'Basic ' + __import__('base64').b64encode(b'reviewer:$password').decode()}), timeout=1).status == 200 else 1)" 2>/dev/null && break
        sleep 0.2
    done
    "$venv/bin/python" -m scripts.dicom.dicomweb store --url "$url" "$dicoms"
    echo "run.sh: PACS $url (user reviewer, password in $dir/password); viewer: http://127.0.0.1:8000/ohif/ once the app is up" >&2
    "$SIMADV_REVIEW_PYTHON" -m monailabel.main start_server --app review_app --studies "$url" \
        --host 127.0.0.1 --port 8000 "$@" &
    app_pid=$!
    wait "$app_pid"
}

cmd="${1:-}"; shift || true
case "$cmd" in
    demo) exec "$venv/bin/python" -m scripts.pipeline "$@" ;;
    test)
        setup_review
        setup_pacs browser || true  # tests/test_review_pacs*.py skip, naming the package, when still missing
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
    review-pacs) review_pacs "$@" ;;
    *) echo "usage: ./run.sh demo|test|review-app|review-pacs [args]" >&2; exit 2 ;;
esac
