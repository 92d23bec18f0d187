#!/bin/sh
# An external post-processor for detectq: put it (executable) in DETECTQ_PLUGINS_DIR.
#
# detectq runs it once per completed request with the outcome as one JSON object on standard input
# (request_id, remote_uuid, media_type, label, is_fake, score, metadata, result, completed_at, ...).
# Exit 0: done. Exit 75: try again later. Any other status: the task fails, with standard error as the reason.
#
# This one appends a line for every fake to the file named by LOG_FAKES_FILE (default ./fakes.log).
set -eu
payload=$(cat)
case "$payload" in
  *'"is_fake":true'*) ;;
  *) exit 0 ;;
esac
log=${LOG_FAKES_FILE:-./fakes.log}
request=$(printf '%s' "$payload" | sed -n 's/.*"request_id":\([0-9]*\).*/\1/p')
if ! printf '%s fake request %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$request" >> "$log"; then
  echo "cannot append to $log" >&2
  exit 75
fi
