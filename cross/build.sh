#!/usr/bin/env bash
# Builds the release bramble-agent for the boards, strips it, checks that it runs under qemu-user,
# and packages it into target/dist/:
#
#   cross/build.sh [--all] [--no-install] [TARGET...]
#
#   TARGET        default: aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf
#                          aarch64-unknown-linux-musl
#                 also: x86_64-unknown-linux-gnu (run natively; `bramble deploy`'s test installs
#                 its tarball on network-namespace "boards", and its .debs suit an x86_64 master)
#   --all         also build bramble (the master and CLI) and the framework binaries bramble-pi,
#                 bramble-wordcount and bramble-sensor (slower: the master is LTO'd at opt-level 3)
#   --no-install  do not apt-get install / rustup target add what is missing; fail instead
#
# Per target, target/dist/ gets:
#   bramble-agent-VERSION-TARGET.tar.gz   bramble-agent, bramble-agent-tls (for mqtts:// brokers;
#                                         `install.sh --tls`), agent.toml, bramble-agent.service,
#                                         install.sh
#   bramble-agent_VERSION_ARCH.deb        the gnu targets only (arm64, armhf, amd64), by cross/deb.sh
#   bramble-VERSION-TARGET.tar.gz         with --all: bramble and the framework binaries
#   bramble_VERSION_ARCH.deb              with --all, the gnu targets: the master, its systemd unit
#                                         and /etc/default/bramble-master
# The binaries stay in $CARGO_TARGET_DIR/TARGET/release/ (the qemu tests use them from there).
# Exits non-zero (after packaging every target and printing the sizes) when a board target's
# stripped plain bramble-agent is over its 1.5 MiB budget; the TLS builds and x86_64 have none.
set -euo pipefail
cd "$(dirname "$0")/.."

all=no
install=yes
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --all) all=yes ;;
    --no-install) install=no ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "build.sh: unknown option $1" >&2; exit 64 ;;
    *) targets+=("$1") ;;
  esac
  shift
done
[ ${#targets[@]} -gt 0 ] ||
  targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf aarch64-unknown-linux-musl)

target_dir=${CARGO_TARGET_DIR:-$PWD/target}
dist=$target_dir/dist
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || { echo "build.sh: no version in Cargo.toml" >&2; exit 1; }
limit=$((3 * 1024 * 1024 / 2))

# The cross pieces each target needs: gcc (the linker), binutils (strip, objdump), qemu (runner).
tools_for() {
  case "$1" in
    aarch64-*) echo "aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu qemu-aarch64 qemu-user" ;;
    armv7-*) echo "arm-linux-gnueabihf-gcc gcc-arm-linux-gnueabihf qemu-arm qemu-user" ;;
    x86_64-unknown-linux-gnu) echo "cc gcc strip binutils" ;; # the host: no emulator
    *) echo "build.sh: unsupported target $1" >&2; exit 64 ;;
  esac
}

missing=()
for t in "${targets[@]}"; do
  read -r gcc gcc_pkg qemu qemu_pkg <<<"$(tools_for "$t")"
  command -v "$gcc" >/dev/null || missing+=("$gcc_pkg")
  command -v "$qemu" >/dev/null || missing+=("$qemu_pkg")
done
command -v dpkg-deb >/dev/null || missing+=(dpkg)
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$install" = no ]; then
    echo "build.sh: missing packages: ${missing[*]} (apt-get install them)" >&2
    exit 1
  fi
  echo "==> apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
installed_targets=$(rustup target list --installed)
for t in "${targets[@]}"; do
  if ! grep -qx "$t" <<<"$installed_targets"; then
    [ "$install" = yes ] || { echo "build.sh: rustup target add $t" >&2; exit 1; }
    rustup target add "$t"
  fi
done

# The extra binaries are built by a second cargo call: built together, cargo would unify the
# dependencies' features (tokio's multi-threaded runtime, …) into the agent too.
extras=(-p bramble -p bramble-pi -p bramble-wordcount -p bramble-sensor)

mkdir -p "$dist"
sizes=()
over=() # the targets whose plain agent is over the budget: build.sh fails at the end
for t in "${targets[@]}"; do
  case "$t" in
    aarch64-*) prefix=aarch64-linux-gnu; qemu=(qemu-aarch64 -L /usr/aarch64-linux-gnu) ;;
    armv7-*) prefix=arm-linux-gnueabihf; qemu=(qemu-arm -L /usr/arm-linux-gnueabihf) ;;
    x86_64-*) prefix=; qemu=() ;;
  esac

  release=$target_dir/$t/release
  # The TLS build first (mqtts:// brokers; over the 1.5 MiB budget, so not the default), kept
  # aside as bramble-agent-tls; then the plain one, which stays at release/bramble-agent.
  echo "==> $t: cargo build --release -p bramble-agent --features tls"
  start=$SECONDS
  cargo build --quiet --release --target "$t" -p bramble-agent --features tls
  "${prefix:+$prefix-}strip" -o "$release/bramble-agent-tls" "$release/bramble-agent"
  echo "    built in $((SECONDS - start)) s"
  echo "==> $t: cargo build --release -p bramble-agent"
  start=$SECONDS
  cargo build --quiet --release --target "$t" -p bramble-agent
  echo "    built in $((SECONDS - start)) s"
  if [ "$all" = yes ]; then
    echo "==> $t: cargo build --release ${extras[*]}"
    start=$SECONDS
    cargo build --quiet --release --target "$t" "${extras[@]}"
    echo "    built in $((SECONDS - start)) s"
  fi
  release=$target_dir/$t/release
  # Release builds are already stripped by cargo (profile strip = true); the target's strip makes
  # sure, and is what the size budget is measured on.
  "${prefix:+$prefix-}strip" "$release/bramble-agent"
  # The binary must run on the target: `--version` under qemu-user (natively for x86_64).
  "${qemu[@]}" "$release/bramble-agent" --version >/dev/null ||
    { echo "build.sh: $t bramble-agent does not run${qemu[0]:+ under ${qemu[0]}}" >&2; exit 1; }
  bytes=$(stat -c %s "$release/bramble-agent")
  case "$t" in
    # x86_64 is no board (bramble deploy's test, x86_64 hosts) and keeps the host's default PIE
    # and unwind tables: reported, not budgeted.
    x86_64-*) verdict="(not a board, no budget)" ;;
    *)
      verdict="ok, $((limit - bytes)) bytes to spare"
      if [ "$bytes" -gt "$limit" ]; then
        verdict="OVER 1.5 MiB by $((bytes - limit)) bytes"
        over+=("$t")
      fi
      ;;
  esac
  sizes+=("$(awk -v t="$t" -v b="$bytes" -v v="$verdict" \
    'BEGIN { printf "%-32s %9d bytes  %5.2f MiB  %s", t, b, b / 1048576, v }')")
  bytes=$(stat -c %s "$release/bramble-agent-tls")
  sizes+=("$(awk -v t="$t (tls)" -v b="$bytes" \
    'BEGIN { printf "%-32s %9d bytes  %5.2f MiB  (TLS build, no budget)", t, b, b / 1048576 }')")

  # The tarball: a directory install.sh can be run from.
  name=bramble-agent-$version-$t
  stage=$(mktemp -d)
  mkdir "$stage/$name"
  install -m 0755 "$release/bramble-agent" "$stage/$name/bramble-agent"
  install -m 0755 "$release/bramble-agent-tls" "$stage/$name/bramble-agent-tls"
  install -m 0644 cross/pkg/agent.toml cross/pkg/bramble-agent.service "$stage/$name/"
  install -m 0755 cross/install.sh "$stage/$name/install.sh"
  tar -czf "$dist/$name.tar.gz" -C "$stage" --owner=0 --group=0 "$name"
  echo "    $dist/$name.tar.gz"

  if [ "$all" = yes ]; then
    name=bramble-$version-$t
    mkdir "$stage/$name"
    for b in bramble bramble-pi bramble-wordcount bramble-sensor; do
      "${prefix:+$prefix-}strip" "$release/$b"
      install -m 0755 "$release/$b" "$stage/$name/$b"
      bytes=$(stat -c %s "$release/$b")
      sizes+=("$(awk -v t="$t" -v n="$b" -v b="$bytes" \
        'BEGIN { printf "%-32s %9d bytes  %5.2f MiB  (%s)", t, b, b / 1048576, n }')")
    done
    tar -czf "$dist/$name.tar.gz" -C "$stage" --owner=0 --group=0 "$name"
    echo "    $dist/$name.tar.gz"
  fi

  case "$t" in
    *-linux-gnu | *-linux-gnueabihf)
      # The .debs (cross/deb.sh): the agent's, and with --all the master's.
      cross/deb.sh bramble-agent "$t" "$release" "$dist" | sed 's/^/    /'
      [ "$all" = no ] || cross/deb.sh bramble "$t" "$release" "$dist" | sed 's/^/    /'
      ;;
  esac
  rm -rf "$stage"
done

echo
echo "Stripped sizes (the agent's budget: 1.5 MiB = $limit bytes):"
printf '  %s\n' "${sizes[@]}"
if [ ${#over[@]} -gt 0 ]; then
  echo "build.sh: FAILED: the stripped bramble-agent is over its 1.5 MiB budget ($limit bytes) for" \
    "${over[*]} (above). The TLS builds have no budget; the plain ones must fit (cross/README.md)." >&2
  exit 1
fi
