#!/bin/bash
# Run a benchmark on a freshly made ext4 filesystem (default mkfs options, so with a
# journal), mounted in a private mount namespace that disappears with the command.
#
#   benchmarks/on_fresh_ext4.sh [--size 6G] .venv/bin/python benchmarks/bench_add.py ...
#
# Why: this machine's root filesystem is ext4 *without* a journal, and there the
# inode allocator skips, one by one, every inode freed in the last minutes
# (ext4's recently_deleted(), only checked when there is no journal). Any benchmark
# that runs after a large rm -rf (a previous benchmark's cleanup, a test run) then
# measures that history more than the tool: the same 10,000-file add took 2.6 s and
# 8.9 s on the root filesystem an hour apart. A fresh journalled ext4, as desktop
# installs have, gives both tools the same clean disk. Both figures belong in a
# report. Needs root (mount); ANNEXSYNC_BENCH_DIR (read by benchmarks/common.py)
# and --dir (bench_get.py) point at the mount.
set -euo pipefail
size=6G
if [ "${1:-}" = "--size" ]; then size=$2; shift 2; fi
[ $# -gt 0 ] || { echo "usage: $0 [--size N] COMMAND..." >&2; exit 2; }
if [ -z "${_ANNEXSYNC_IN_NS:-}" ]; then
  img=$(mktemp /var/tmp/annexsync-bench-fs.XXXXXX)
  trap 'rm -f "$img"' EXIT
  truncate -s "$size" "$img"
  # initialised now, not by a kernel thread in the background during the benchmark
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$img"
  _ANNEXSYNC_IN_NS=$img unshare -m --propagation private "$0" --size "$size" "$@"
  exit $?
fi
mnt=$(mktemp -d /tmp/annexsync-bench-mnt.XXXXXX)
mount -o loop "$_ANNEXSYNC_IN_NS" "$mnt"
trap 'umount "$mnt"; rmdir "$mnt"' EXIT
export ANNEXSYNC_BENCH_DIR=$mnt
"$@"
