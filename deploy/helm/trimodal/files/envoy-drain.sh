#!/usr/bin/env bash
# Envoy stops taking new work and finishes what it accepted BEFORE the Triton behind it stops (deploy/GPU.md and
# deploy/KUBERNETES.md, "Shutdown order"). Envoy itself exits at once on SIGTERM, resetting every request in flight;
# this script drains it first through its admin API: POST /healthcheck/fail (/ready answers 503 DRAINING), then
# POST /drain_listeners?graceful (HTTP/2 clients get GOAWAY and HTTP/1.1 ones `Connection: close`, listeners close
# after --drain-time-s), then waits until no downstream request is active (or DRAIN_SECONDS pass).
#
#   envoy-drain.sh run envoy ARGS...   docker compose: run Envoy; on SIGTERM/SIGINT drain it, then stop it
#   envoy-drain.sh drain               Kubernetes preStop: drain the running Envoy; the kubelet's SIGTERM follows
#
# Environment: ENVOY_ADMIN (host:port of the admin API, default 127.0.0.1:9901), DRAIN_SECONDS (longest wait, 20),
# DRAIN_MIN_SECONDS (shortest wait, 0: in Kubernetes, the time the endpoint removal needs to reach kube-proxy, during
# which new connections still arrive and are served).
# Needs only bash (its /dev/tcp): the Envoy image has neither curl nor wget.
set -u
ADMIN="${ENVOY_ADMIN:-127.0.0.1:9901}"
DRAIN_SECONDS="${DRAIN_SECONDS:-20}"
DRAIN_MIN_SECONDS="${DRAIN_MIN_SECONDS:-0}"

log() { printf 'envoy-drain: %s\n' "$*" >&2; }

admin() {  # admin METHOD PATH: the body on stdout; fails unless 200 (Envoy refuses HTTP/1.0: 1.1 + close)
  local fd status
  exec {fd}<>"/dev/tcp/${ADMIN%:*}/${ADMIN##*:}" || return 1
  printf '%s %s HTTP/1.1\r\nHost: envoy-admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' "$1" "$2" >&"$fd"
  read -r _ status _ <&"$fd"
  sed '1,/^\r\{0,1\}$/d' <&"$fd"
  exec {fd}>&-
  [[ "$status" == 200 ]]
}

active_requests() {  # downstream requests in flight on the serving listeners (the admin and ops listeners excluded)
  admin GET '/stats?filter=downstream_rq_active' |
    awk -F': ' '$1 ~ /^http\./ && $1 !~ /^http\.(admin|ops)\./ {n += $2} END {print n + 0}'
}

now_ms() { local t="${EPOCHREALTIME/[.,]/}"; echo $((t / 1000)); }  # bash 5 (SECONDS is whole seconds)

drain() {
  local start deadline earliest active
  start="$(now_ms)"
  deadline=$((start + DRAIN_SECONDS * 1000))
  earliest=$((start + DRAIN_MIN_SECONDS * 1000))
  # Fail the health check first: /ready answers 503 (DRAINING), so whatever balances over Envoy (a Kubernetes
  # readiness probe, an external load balancer) stops sending new connections; then drain the listeners.
  admin POST /healthcheck/fail >/dev/null || log "could not fail the health check"
  if ! admin POST '/drain_listeners?graceful' >/dev/null; then
    log "the admin API at $ADMIN did not start a drain: stopping without one"
    return 0
  fi
  log "draining (at most ${DRAIN_SECONDS}s)"
  while (($(now_ms) < deadline)); do
    active="$(active_requests)" || break
    if [[ "$active" == 0 ]] && (($(now_ms) >= earliest)); then
      log "no request in flight"
      return 0
    fi
    sleep 0.2
  done
  log "gave up waiting after ${DRAIN_SECONDS}s (${active:-?} requests still in flight)"
}

case "${1:-}" in
  drain)
    drain
    ;;
  run)
    shift
    "$@" &
    child=$!
    stopping=0
    stop() {
      trap '' TERM INT
      stopping=1
      drain
      kill -TERM "$child" 2>/dev/null
    }
    trap stop TERM INT
    wait "$child"   # returns early when a trapped signal arrives ...
    status=$?
    if ((stopping)); then
      wait "$child"   # ... then Envoy's own exit status (0 after SIGTERM)
      status=$?
    fi
    exit "$status"
    ;;
  *)
    echo "usage: $0 run envoy ARGS... | drain" >&2
    exit 2
    ;;
esac
