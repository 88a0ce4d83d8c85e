#!/bin/sh
# Prints $GREETING every $INTERVAL seconds until stopped.
while true; do
  echo "$GREETING (thing $AWS_IOT_THING_NAME)"
  sleep "${INTERVAL:-10}"
done
