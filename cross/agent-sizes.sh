#!/usr/bin/env bash
# Builds the release bramble-agent for the board targets (and x86_64 with the same flags), strips it
# with the target's own strip, and prints the sizes. Target: at most 1.5 MiB; exits 1 when a board
# target's plain (non-TLS) agent is over it, as cross/build.sh does.
#
#   cross/agent-sizes.sh [TARGET...]      (default: x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu)
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu)
board_flags="-C force-unwind-tables=no -C relocation-model=static"
target_dir=${CARGO_TARGET_DIR:-target}
limit=$((3 * 1024 * 1024 / 2))
over=0
for t in "${targets[@]}"; do
  case "$t" in
    aarch64-*) strip=aarch64-linux-gnu-strip ;;
    armv7-*) strip=arm-linux-gnueabihf-strip ;;
    *) strip="strip" ;;
  esac
  rustup target add "$t" >/dev/null 2>&1 || true
  # The board targets get these flags from .cargo/config.toml; x86_64 gets them here.
  if [ "$t" = x86_64-unknown-linux-gnu ]; then
    RUSTFLAGS="$board_flags" cargo build --quiet --release -p bramble-agent --target "$t"
  else
    cargo build --quiet --release -p bramble-agent --target "$t"
  fi
  out="$target_dir/$t/release/bramble-agent"
  stripped="$target_dir/$t/release/bramble-agent.stripped"
  "$strip" -o "$stripped" "$out"
  bytes=$(stat -c %s "$stripped")
  verdict=ok; [ "$bytes" -le "$limit" ] || verdict="OVER 1.5 MiB"
  # x86_64 is only a comparison, not a board: it has no budget to fail.
  [ "$verdict" = ok ] || [ "${t%%-*}" = x86_64 ] || over=1
  awk -v t="$t" -v b="$bytes" -v v="$verdict" 'BEGIN { printf "%-32s %9d bytes  %5.2f MiB  %s\n", t, b, b / 1048576, v }'
  # The TLS build (feature tls, for mqtts:// brokers), shipped beside it as bramble-agent-tls.
  if [ "$t" = x86_64-unknown-linux-gnu ]; then
    RUSTFLAGS="$board_flags" cargo build --quiet --release -p bramble-agent --features tls --target "$t"
  else
    cargo build --quiet --release -p bramble-agent --features tls --target "$t"
  fi
  "$strip" -o "$stripped" "$out"
  bytes=$(stat -c %s "$stripped")
  awk -v t="$t (tls)" -v b="$bytes" 'BEGIN { printf "%-32s %9d bytes  %5.2f MiB  (no budget)\n", t, b, b / 1048576 }'
done
exit "$over"
