#!/usr/bin/env bash
# The full benchmark: every installed backend, every shape, 11 interleaved rounds.
# Takes minutes per backend; run it on an otherwise idle machine.
#
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for this command only, so that
# OpenBLAS picks the kernel it detects for this CPU (the "architecture" that
# results.json records).  Extra arguments are passed on, e.g. `benchmarks/run.sh --backends numpy`.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v multiconv >/dev/null 2>&1; then
    bench=(multiconv bench)
else
    bench=("${PYTHON:-python3}" -m multiconv bench)
fi
exec env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
    "${bench[@]}" --json benchmarks/results.json --plot benchmarks/results.png "$@"
