#!/usr/bin/env bash
# Builds one Bramble .deb with dpkg-deb from a staging root (what cargo-deb would lay out, with no
# tool to compile). cross/build.sh runs it for each gnu target; the packaging tests run it too.
#
#   cross/deb.sh PACKAGE TARGET BINDIR DIST
#
#   PACKAGE  bramble-agent (the agent, /etc/bramble/agent.toml, bramble-agent.service)
#            bramble (the master and CLI, /etc/default/bramble-master, bramble-master.service)
#   TARGET   aarch64-unknown-linux-gnu (arm64), armv7-unknown-linux-gnueabihf (armhf) or
#            x86_64-unknown-linux-gnu (amd64)
#   BINDIR   the directory holding the stripped binary (bramble-agent or bramble)
#   DIST     where PACKAGE_VERSION_ARCH.deb is written (its path is printed)
#
# The maintainer scripts are cross/pkg/debian/PACKAGE.{postinst,prerm,postrm}; Depends is libc6 of
# at least the newest GLIBC_ symbol version the binary uses (read with the target's objdump -T).
set -euo pipefail
[ $# -eq 4 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 64; }
package=$1 target=$2 bindir=$3 dist=$4
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || { echo "deb.sh: no version in Cargo.toml" >&2; exit 1; }
case "$target" in
  aarch64-unknown-linux-gnu) objdump=aarch64-linux-gnu-objdump arch=arm64 ;;
  armv7-unknown-linux-gnueabihf) objdump=arm-linux-gnueabihf-objdump arch=armhf ;;
  x86_64-unknown-linux-gnu) objdump=objdump arch=amd64 ;;
  *) echo "deb.sh: no .deb for $target" >&2; exit 64 ;;
esac

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
case "$package" in
  bramble-agent)
    binary=bramble-agent conffile=/etc/bramble/agent.toml
    install -D -m 0644 cross/pkg/agent.toml "$root$conffile"
    install -D -m 0644 cross/pkg/bramble-agent.service \
      "$root/lib/systemd/system/bramble-agent.service"
    description="Bramble agent: runs a Raspberry Pi's share of a Bramble cluster
 The agent reports the board's resources to the Bramble master over MQTT and
 runs the tasks the frameworks launch on it as processes in cgroups (v2 under
 systemd, with Delegate=yes). Set the broker in /etc/bramble/agent.toml."
    ;;
  bramble)
    binary=bramble conffile=/etc/default/bramble-master
    install -D -m 0644 cross/pkg/bramble-master.default "$root$conffile"
    install -D -m 0644 cross/pkg/bramble-master.service \
      "$root/lib/systemd/system/bramble-master.service"
    description="Bramble master and command line for a cluster of Raspberry Pi boards
 The master shares the boards' resources between frameworks with Dominant
 Resource Fairness, by resource offers over MQTT (its own embedded broker or an
 external one), and serves a web dashboard, Prometheus metrics and artifacts.
 bramble-master.service runs it (enabled, not started: set its arguments in
 /etc/default/bramble-master first). The bramble command also reads the
 cluster's status, runs one-off tasks and deploys agents over SSH."
    ;;
  *) echo "deb.sh: unknown package $package (bramble-agent, bramble)" >&2; exit 64 ;;
esac
install -D -m 0755 "$bindir/$binary" "$root/usr/bin/$binary"
install -d -m 0755 "$root/DEBIAN"
for script in postinst prerm postrm; do
  [ ! -f "cross/pkg/debian/$package.$script" ] ||
    install -m 0755 "cross/pkg/debian/$package.$script" "$root/DEBIAN/$script"
done
echo "$conffile" >"$root/DEBIAN/conffiles"
glibc=$("$objdump" -T "$bindir/$binary" | { grep -o 'GLIBC_[0-9.]*' || true; } |
  sed 's/GLIBC_//' | sort -V | tail -n 1)
[ -n "$glibc" ] || { echo "deb.sh: $bindir/$binary uses no GLIBC_ symbol" >&2; exit 1; }
cat >"$root/DEBIAN/control" <<EOF
Package: $package
Version: $version
Architecture: $arch
Maintainer: The Bramble developers <bramble@users.noreply.github.com>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: libc6 (>= $glibc)
Section: admin
Priority: optional
Homepage: https://github.com/bramble-cluster/bramble
Description: $description
EOF
mkdir -p "$dist"
deb=$dist/${package}_${version}_$arch.deb
# mktemp made the root 0700: dpkg-deb wants the package's / to be 0755.
chmod 0755 "$root"
dpkg-deb --build --root-owner-group "$root" "$deb" >/dev/null
echo "$deb"
