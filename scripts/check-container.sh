#!/usr/bin/env bash
# Builds the container image and checks that `docker stop` drains its node: the container answers /readyz,
# then stops with exit code 0 after logging "SIGTERM: stopping". Needs a Docker engine (the test suite
# exercises the image's entrypoint without one: test/cli/container-entrypoint.test.ts).
set -euo pipefail
cd "$(dirname "$0")/.."

docker info >/dev/null 2>&1 || { echo "check-container: no Docker engine answers (docker info failed)" >&2; exit 1; }
tag="baton-check-container:$$"
name="baton-check-container-$$"
port="${PORT:-18080}"
cleanup() {
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker rmi -f "$tag" >/dev/null 2>&1 || true
}
trap cleanup EXIT

docker build -t "$tag" .
docker run -d --name "$name" -e BATON_HTTP__TOKEN=check-container-token-0123 -p "127.0.0.1:$port:8080" "$tag" >/dev/null
for _ in $(seq 1 240); do
  if [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" == 200 ]]; then break; fi
  sleep 0.5
done
[[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" == 200 ]] ||
  { echo "check-container: the container was not ready in 120 s" >&2; docker logs "$name" >&2; exit 1; }
docker stop --time 40 "$name" >/dev/null
code="$(docker inspect --format '{{.State.ExitCode}}' "$name")"
[[ "$code" == 0 ]] || { echo "check-container: exit code $code, not 0" >&2; docker logs "$name" >&2; exit 1; }
docker logs "$name" 2>&1 | grep -q 'SIGTERM: stopping' ||
  { echo "check-container: no drain in the logs" >&2; exit 1; }
echo "check-container: built, ready, and drained by docker stop (exit 0)"
