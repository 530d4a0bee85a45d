#!/usr/bin/env bash
# Run `riskgate check` for the GitHub Action with the inputs that action.yml passes as
# RISKGATE_* environment variables. Every value reaches riskgate as one quoted argument, so no
# input is ever parsed by the shell. Writes the exit code to the step output `exit-code` and
# exits with it.
set -uo pipefail

args=(check --model "${RISKGATE_MODEL:?RISKGATE_MODEL: missing; set the action input model}")
args+=(--dataset "${RISKGATE_DATASET:?RISKGATE_DATASET: missing; set the action input dataset}")
args+=(--output-dir "${RISKGATE_OUTPUT_DIR:-riskgate-report}")
# SARIF and JUnit next to the default three, for code-scanning uploads and test-report views.
for format in json markdown html sarif junit; do
  args+=(--format "$format")
done

# Append `FLAG VALUE` when the input is set; an empty input keeps riskgate's default.
add_option() {
  local flag="$1" value="$2"
  if [[ -n "$value" ]]; then
    args+=("$flag" "$value")
  fi
}

add_option --policy "${RISKGATE_POLICY:-}"
add_option --safety-data "${RISKGATE_SAFETY_DATA:-}"
add_option --learning-rate "${RISKGATE_LEARNING_RATE:-}"
add_option --max-steps "${RISKGATE_MAX_STEPS:-}"
add_option --batch-size "${RISKGATE_BATCH_SIZE:-}"
add_option --train-config "${RISKGATE_TRAIN_CONFIG:-}"
add_option --max-safety-examples "${RISKGATE_MAX_SAFETY_EXAMPLES:-}"
add_option --max-finetune-examples "${RISKGATE_MAX_FINETUNE_EXAMPLES:-}"
add_option --max-seq-len "${RISKGATE_MAX_SEQ_LEN:-}"
add_option --time-budget "${RISKGATE_TIME_BUDGET:-}"
add_option --waivers "${RISKGATE_WAIVERS:-}"
add_option --params "${RISKGATE_PARAMS:-}"
add_option --max-memory "${RISKGATE_MAX_MEMORY:-}"
add_option --lora-config "${RISKGATE_LORA_CONFIG:-}"
add_option --subspace "${RISKGATE_SUBSPACE:-}"

case "${RISKGATE_FAIL_ON_WARN:-false}" in
  true) args+=(--fail-on-warn) ;;
  false) ;;
  *)
    echo "riskgate: error: fail-on-warn: expected true or false, got '${RISKGATE_FAIL_ON_WARN}'" >&2
    echo "exit-code=2" >> "${GITHUB_OUTPUT:-/dev/null}"
    exit 2
    ;;
esac

riskgate "${args[@]}"
code=$?
echo "exit-code=${code}" >> "${GITHUB_OUTPUT:-/dev/null}"
exit "$code"
