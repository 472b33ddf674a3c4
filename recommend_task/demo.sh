#!/usr/bin/env bash
# The trainer chain on synthetic data, then a summary read back from BigQuery.
# Run through `make demo`, which starts the emulators and sets their environment.
set -euo pipefail
run_date=${1:?usage: demo.sh RUN_DATE ARTIFACTS_URI}
artifacts=${2:?usage: demo.sh RUN_DATE ARTIFACTS_URI}
python=${TRAINER_PYTHON:-python}
cd "$(dirname "$0")"
indent() { sed -u 's/^/    /'; }

echo "== seeding synthetic events (1% damaged rows) ending $run_date"
"$python" -m trainer.seed_events --end-date "$run_date" --corrupt-fraction 0.01 2>&1 | indent
echo "== trainer chain for $run_date -> $artifacts"
TRAINER_PYTHON=$python ./run_chain.sh "$run_date" "$artifacts" 2>&1 | indent
"$python" -m trainer.report --run-date "$run_date" --users 3 --log-level WARNING
