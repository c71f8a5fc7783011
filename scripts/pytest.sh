#!/usr/bin/env bash
# Run pytest from the project venv; "no tests ran" (exit 5) is an error, said plainly.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests (exit 5); a test run that runs nothing is a failure" >&2
  exit 1
fi
exit "$rc"
