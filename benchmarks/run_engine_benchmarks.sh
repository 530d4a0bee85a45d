#!/usr/bin/env bash
# Run every benchmark of the diagnostics engine: accuracy, pass-equivalents and whole-model
# scale (benchmarks/engine.py), then the comparison with alignment-risk 1.14.1
# (benchmarks/peer_comparison.py) in its own environment. Results go to benchmarks/results/.
#
#   bash benchmarks/run_engine_benchmarks.sh [THREADS]
#
# Needs the project's .venv (README's setup command). alignment-risk pins torch<2.7, so it is
# installed with --no-deps into .venv-peer beside .venv's torch 2.13, once.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-1}"

export OMP_NUM_THREADS="$threads"
.venv/bin/python benchmarks/engine.py all --threads "$threads" --out benchmarks/results/engine.json

if [ ! -x .venv-peer/bin/python ]; then
    .venv/bin/python -m venv --system-site-packages .venv-peer
    echo "import site; site.addsitedir('$PWD/.venv/lib/python3.11/site-packages')" \
        > .venv-peer/lib/python3.11/site-packages/riskgate-venv.pth
    .venv-peer/bin/pip install --quiet --no-deps alignment-risk==1.14.1 numpy matplotlib
fi
.venv-peer/bin/python benchmarks/peer_comparison.py --threads "$threads"
