#!/bin/sh
# A task of the chaos run's workflow: appends "<task> <execution> <task run id>" to <file>, then sleeps
# <seconds> (so that faults find some runs running). Usage: flow-task.sh <file> <seconds>
set -eu
echo "$BATON_TASK $BATON_EXECUTION $BATON_TASK_RUN" >>"$1"
exec sleep "$2"
