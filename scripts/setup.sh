#!/usr/bin/env bash
# Installs the Debian packages quadc builds with, only those that are missing.
# Safe to run again: with everything present it installs nothing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config python3
  llvm-19-dev llvm-19-tools clang-19 libclang-rt-19-dev
  flex bison
  libcjson-dev libpcre2-dev libpng-dev zlib1g-dev libzstd-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
