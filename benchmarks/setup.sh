#!/usr/bin/env bash
# Benchmark set-up, once per machine: a native BLAS for MLlib and the bench extra.
#
# MLlib reaches BLAS through dev.ludovic.netlib, which loads the system's libblas.so.3 when
# there is one and otherwise falls back to a pure-Java BLAS. Debian's OpenBLAS provides
# libblas.so.3 (via update-alternatives), so MLlib is measured with native BLAS, as it would
# be on a tuned cluster. The run reports which BLAS the JVM actually loaded.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
    apt-get update -q
    # r-cran-mlbench ships real data sets (LetterRecognition, Satellite) for the defaults run.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q libopenblas0-pthread r-cran-mlbench
else
    echo "no apt-get: install an OpenBLAS that provides libblas.so.3 by hand" >&2
fi
pip install -q ".[bench]"
