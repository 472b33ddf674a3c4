#!/usr/bin/env bash
# Run the trainer chain for one run date without Airflow:
#   matrices -> train -> evaluate -> promote -> predict
# Usage: run_chain.sh RUN_DATE ARTIFACTS_URI
# Project, dataset and emulator endpoints come from the environment (see README).
set -euo pipefail
run_date=${1:?usage: run_chain.sh RUN_DATE ARTIFACTS_URI}
artifacts=${2:?usage: run_chain.sh RUN_DATE ARTIFACTS_URI}

python=${TRAINER_PYTHON:-python}
cd "$(dirname "$0")"
common=(--run-date "$run_date" --artifacts-uri "$artifacts")
"$python" -m trainer.create_cf_matrices_task "${common[@]}"
"$python" -m trainer.train_task "${common[@]}"
"$python" -m trainer.evaluate_task "${common[@]}"
"$python" -m trainer.promote_model_task "${common[@]}"
"$python" -m trainer.predict_task "${common[@]}"
