#!/usr/bin/env bash
# The Ray cluster tests (tests/cluster, marked `cluster`) inside a network namespace of their own that has only
# loopback: Ray's nodes then bind 127.0.0.1 and nothing reaches another machine. Needs root and iproute2's `ip`;
# without them the tests are skipped, saying why (FLUXEDIT_REQUIRE_CLUSTER=1, as in CI: they fail instead).
# Extra arguments go to pytest. The namespace, and anything still running in it, is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}

skip() {
  if [ "${FLUXEDIT_REQUIRE_CLUSTER:-}" = 1 ]; then
    echo "the Ray cluster tests cannot run: $1 (FLUXEDIT_REQUIRE_CLUSTER=1)" >&2
    exit 1
  fi
  echo "skipping the Ray cluster tests: $1"
  exit 0
}

[ "$(id -u)" = 0 ] || skip "they need root to make a network namespace (sudo $0)"
command -v ip >/dev/null 2>&1 || skip "iproute2's ip command is missing (apt-get install iproute2)"

netns="fluxedit-cluster-$$-$RANDOM"
ip netns add "$netns" 2>/dev/null || skip "ip netns add failed (no permission to make a network namespace here?)"
cleanup() {
  for pid in $(ip netns pids "$netns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  ip netns del "$netns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns exec "$netns" ip link set lo up
FLUXEDIT_CLUSTER_NETNS="$netns" ip netns exec "$netns" "$PY" -m pytest -m cluster tests/cluster "$@"
