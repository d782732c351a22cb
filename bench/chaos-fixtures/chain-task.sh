#!/bin/sh
# A task of the chaos run's chain: appends "<letter> <task run id>" to <file>; given <next key>, it then
# sends that event to the node that runs it (BATON_URL), with the run id as value and as producer id, so
# that a resend after a lost answer is stored once. Usage: chain-task.sh <letter> <file> [<next key>]
set -eu
letter=$1
out=$2
next=${3:-}
echo "$letter $BATON_TASK_RUN" >>"$out"
[ -z "$next" ] && exit 0
body=$(printf '{"key":"%s","value":"%s","namespace":"%s","client_id":"%s","seq":0,"context":"{\\"taskRun\\":\\"%s\\"}"}' \
  "$next" "$BATON_TASK_RUN" "$BATON_NAMESPACE" "$BATON_TASK_RUN" "$BATON_TASK_RUN")
exec curl -sS -f -o /dev/null -m 5 --retry 6 --retry-all-errors --retry-delay 1 \
  -H 'content-type: application/json' --data "$body" "$BATON_URL/v1/events"
