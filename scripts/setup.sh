#!/usr/bin/env bash
# Installs what NativeStore needs on Debian 12 with a Rust toolchain:
# Elixir 1.14 and Erlang/OTP 25 from Debian (hex.pm is not used).
set -euo pipefail

need_apt=0
command -v mix >/dev/null 2>&1 || need_apt=1
command -v erl >/dev/null 2>&1 || need_apt=1
[ -f /usr/lib/erlang/usr/include/erl_nif.h ] || need_apt=1

if [ "$need_apt" = 1 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq elixir erlang-dev erlang-dev >/dev/null
fi

command -v cargo >/dev/null 2>&1 || { echo "cargo (Rust toolchain) is required" >&2; exit 1; }
# UTF-8 for the Elixir VM (it warns otherwise).
exit 0
