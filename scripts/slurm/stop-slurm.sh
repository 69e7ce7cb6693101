#!/usr/bin/env bash
# stop-slurm.sh - stop the daemons started by start-slurm.sh (by pid file only).
# Cancels running jobs first so no slurmstepd/tasks are left behind.
set -uo pipefail
SLURM_DIR=${SLURM_DIR:-/tmp/cnnfleet-slurm}
QUIET=${1:-}
say() { [ "$QUIET" = --quiet ] || echo "[stop-slurm] $*"; }
export SLURM_CONF=$SLURM_DIR/etc/slurm.conf

alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }  # zombies count as dead

stop_pid() {  # $1 pidfile
  local f=$1 p
  [ -s "$f" ] || return 0
  p=$(cat "$f")
  if alive "$p"; then
    kill -TERM "$p"
    for _ in $(seq 100); do alive "$p" || break; sleep 0.1; done
    alive "$p" && kill -KILL "$p"
    say "stopped $(basename "$f" .pid) (pid $p)"
  fi
  rm -f "$f"
}

if [ -s "$SLURM_DIR/run/slurmctld.pid" ] && alive "$(cat "$SLURM_DIR/run/slurmctld.pid")"; then
  jobs=$(squeue -h -o %i 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    say "cancelling jobs: $(echo $jobs)"
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 150); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
  fi
fi
for f in "$SLURM_DIR"/run/slurmd-*.pid; do [ -e "$f" ] && stop_pid "$f"; done
stop_pid "$SLURM_DIR/run/slurmctld.pid"
if [ -e "$SLURM_DIR/run/munged-started-by-us" ]; then
  stop_pid /run/munge/munged.pid
  rm -f "$SLURM_DIR/run/munged-started-by-us"
fi
say "done"
