#!/usr/bin/env bash
# The main job end to end on the bundled sample case. Run through `make demo` (which builds .venv first).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-out/demo}"
BIN=.venv/bin
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== detect: classify every device in the three S1SP extracts"
"$BIN/remediation" detect --config configs/sample.toml --out "$OUT/detect"
