#!/usr/bin/env bash
# apt_update_retrying LOG APT_ARG...: `apt-get APT_ARG... update`, retried (sourced, not run).
#
# A Debian mirror in the middle of a sync serves an index whose size or hash disagrees with the
# Release file it just served ("File has unexpected size (356624 != 356976). Mirror sync in
# progress?"); a fresh clone has no older lists to fall back on, so one such moment used to fail the
# whole build. apt keeps every index it did get, so a retry refetches only the bad ones. Tries
# DOZEN_APT_TRIES times (default 5), 15, 30, 60, 120 s apart (DOZEN_APT_RETRY_WAIT sets the first
# wait): a sync window is minutes, not hours.
# Returns 0 on success; otherwise 1, with LOG holding the last try's output.
apt_update_retrying() {
  local log=$1 try tries=${DOZEN_APT_TRIES:-5} wait=${DOZEN_APT_RETRY_WAIT:-15}
  shift
  for ((try = 1; ; try++)); do
    if apt-get "$@" update >"$log" 2>&1; then
      return 0
    fi
    [ "$try" -lt "$tries" ] || return 1
    echo "[apt] apt-get update failed (try $try of $tries): $(grep -m1 -E '^(E|Err):' "$log" | cut -c1-160); retrying in ${wait}s" >&2
    sleep "$wait"
    wait=$((wait * 2))
  done
}
