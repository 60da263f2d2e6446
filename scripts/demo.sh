#!/usr/bin/env bash
# Quick start: install annexsync into .venv and run a short real session in a folder.
# Usage: scripts/demo.sh [DIR]   (default: a new temporary folder)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
command -v git >/dev/null || { apt-get update -qq && apt-get install -y -qq git >/dev/null; }
if [ ! -x "$here/.venv/bin/annexsync" ]; then
  python3 -m venv "$here/.venv"
  "$here/.venv/bin/python" -m pip install -q -e "$here"
fi
annexsync="$here/.venv/bin/annexsync"
dir="${1:-$(mktemp -d /tmp/annexsync-demo.XXXXXX)}"
mkdir -p "$dir" && cd "$dir"
[ -d .git ] || git init -q
git config user.name >/dev/null || git config user.name "annexsync demo"
git config user.email >/dev/null || git config user.email "demo@example.com"
set -x
"$annexsync" init "demo folder"
echo "hello annexsync" > hello.txt
mkdir -p photos && head -c 300000 /dev/urandom > photos/big.jpg
"$annexsync" add .
git commit -q -m "added with annexsync"
"$annexsync" whereis
"$annexsync" info
