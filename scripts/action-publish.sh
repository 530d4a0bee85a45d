#!/usr/bin/env bash
# Publish the result of `riskgate check` in a GitHub Actions run: step outputs, the job
# summary, annotations and the body of the pull-request comment. Runs after the check step
# whatever its result, and reads RISKGATE_* environment variables that action.yml sets:
#
#   RISKGATE_OUTPUT_DIR     report folder of the check (default riskgate-report)
#   RISKGATE_EXIT_CODE      exit code of the check step, empty when it did not run
#   RISKGATE_COMMENT_FILE   where to write the comment body; unset writes none
#   RISKGATE_ARTIFACT_NAME  name of the uploaded report artifact, named in shortened text
#
# Exits 0, or the exit code of a `riskgate report` call that failed.
set -uo pipefail

output_dir="${RISKGATE_OUTPUT_DIR:-riskgate-report}"
exit_code="${RISKGATE_EXIT_CODE:-}"
artifact="${RISKGATE_ARTIFACT_NAME:-riskgate-report}"
report_json="${output_dir}/report.json"
summary_file="${GITHUB_STEP_SUMMARY:-/dev/null}"
comment_marker="<!-- riskgate-report -->"
# The Actions runner drops a step summary over 1024 KiB; GitHub rejects comments over
# 65,536 characters, and a character takes at least one byte, so bytes bound both.
summary_max_bytes=1000000
comment_max_bytes=60000
status=0

# Append NAME=VALUE to GITHUB_OUTPUT in the multi-line form, with a random delimiter, so
# that a line break in VALUE cannot start another output.
set_output() {
  local name="$1" value="$2" delimiter
  delimiter="riskgate_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  {
    printf '%s<<%s\n' "$name" "$delimiter"
    printf '%s\n' "$value"
    printf '%s\n' "$delimiter"
  } >> "${GITHUB_OUTPUT:-/dev/null}"
}

# Print PATH when the file exists, else nothing.
existing() {
  if [[ -f "$1" ]]; then
    printf '%s' "$1"
  fi
}

# Print the verdict of report.json, or "error" when the file is missing or unreadable.
read_verdict() {
  python - "$report_json" <<'PY' 2>/dev/null || echo error
import json
import sys

with open(sys.argv[1], encoding="utf-8") as handle:
    verdict = json.load(handle).get("verdict")
print(verdict if verdict in ("pass", "warn", "fail", "error") else "error")
PY
}

location="report.html and report.json in the ${artifact} artifact of this run"
have_report=false
if [[ -f "$report_json" ]] && command -v riskgate > /dev/null; then
  have_report=true
fi

verdict="$(read_verdict)"
set_output verdict "$verdict"
set_output report-json "$(existing "$report_json")"
set_output report-markdown "$(existing "${output_dir}/report.md")"
set_output report-html "$(existing "${output_dir}/report.html")"
set_output report-sarif "$(existing "${output_dir}/report.sarif")"
set_output report-junit "$(existing "${output_dir}/report.junit.xml")"

if [[ "$have_report" == true ]]; then
  riskgate report --from "$report_json" --format markdown --max-bytes "$summary_max_bytes" \
    --full-report-location "$location" >> "$summary_file" || status=$?
  riskgate report --from "$report_json" --format github || status=$?
else
  message="riskgate wrote no report (exit code ${exit_code:-none}); the log of the check step shows why."
  printf '**RISKGATE ERROR**: %s\n' "$message" >> "$summary_file"
  printf '::error title=riskgate::%s\n' "$message"
fi

if [[ -n "${RISKGATE_COMMENT_FILE:-}" ]]; then
  {
    printf '%s\n' "$comment_marker"
    if [[ "$have_report" == true ]]; then
      riskgate report --from "$report_json" --format markdown --max-bytes "$comment_max_bytes" \
        --full-report-location "$location" || status=$?
    else
      printf '**RISKGATE ERROR**: %s\n' "$message"
    fi
  } > "$RISKGATE_COMMENT_FILE"
fi

exit "$status"
