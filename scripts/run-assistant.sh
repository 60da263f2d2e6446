#!/usr/bin/env bash
# Quick start: install annexsync (into .venv beside this script's checkout) and start
# the assistant on a folder. Usage: scripts/run-assistant.sh [DIR]   (default: ~/annexsync)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
if ! command -v git >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git >/dev/null
fi
if [ ! -x "$here/.venv/bin/annexsync" ]; then
  python3 -m venv "$here/.venv"
  "$here/.venv/bin/python" -m pip install -q -e "$here"
fi
annexsync="$here/.venv/bin/annexsync"
dir="${1:-$HOME/annexsync}"
mkdir -p "$dir"
git config --global user.name >/dev/null 2>&1 || export GIT_AUTHOR_NAME="${USER:-annexsync}" \
  GIT_COMMITTER_NAME="${USER:-annexsync}"
git config --global user.email >/dev/null 2>&1 || export GIT_AUTHOR_EMAIL="annexsync@localhost" \
  GIT_COMMITTER_EMAIL="annexsync@localhost"
"$annexsync" assistant "$dir"
"$annexsync" -C "$dir" status
cat <<TXT

The assistant now watches $dir: drop files in, and they are committed at once.
To sync with another clone:  cd $dir && git remote add NAME PATH_OR_HOST:PATH
Status: $annexsync -C $dir status --follow      Stop: $annexsync assistant --stop $dir
TXT
