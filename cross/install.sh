#!/bin/sh
# Installs the Bramble agent on a Raspberry Pi (or any arm64/armhf Linux board) and starts it.
#
#   curl -fsSL .../install.sh | sudo sh -s -- --broker mqtt://192.168.1.10:1883 SOURCE
#   sudo ./install.sh --broker mqtt://192.168.1.10:1883      (from an unpacked release tarball)
#
# SOURCE is a release tarball (bramble-agent-VERSION-TARGET.tar.gz) or a .deb, as a path or an
# http(s) URL. Without SOURCE, the files beside this script are installed (the tarball's layout).
#
# Options:
#   --broker URL        set `broker` in /etc/bramble/agent.toml (mqtt://HOST[:PORT], or a comma
#                       list of them that the agent fails over between)
#   --agent-id ID       set `agent_id` in the config (default: the agent uses the hostname)
#   --attribute K=V     set `K = "V"` in the config's [attributes] (repeatable; K: letters, digits,
#                       `_` and `-`, at most 16; V: at most 32 printable characters, no `"` or `\`)
#   --tls               install the TLS build (bramble-agent-tls, for mqtts:// brokers; larger)
#   --credential FILE   install this board's credential file (`bramble credentials add agent ID`;
#                       `-` reads it from stdin) as /etc/bramble/agent.credential (mode 0600, owned
#                       by root) and set `credential_file` in the config; its agent name becomes
#                       `agent_id` (it must match --agent-id when both are given)
#   --no-systemd        do not use systemd: (re)start the agent as a daemon with setsid/nohup,
#                       its pid in /run/bramble-agent.pid and its log in /var/log/bramble-agent.log
#   --root DIR          install below DIR instead of / (staging, tests); systemd is not touched
#   --cgroup-root DIR   where the cgroup filesystem is (default /sys/fs/cgroup), for the check
#   --proc-cgroups FILE the cgroup v1 controller table (default /proc/cgroups), for the check
#   --arch ARCH         use ARCH instead of `uname -m`
#   --no-start          install and enable, but do not (re)start the service
#   -h, --help          this text
#
# Installs /usr/bin/bramble-agent, /etc/bramble/agent.toml (kept if it already exists) and
# /lib/systemd/system/bramble-agent.service, checks that the memory cgroup controller is enabled
# (and says how to enable it if not), then enables and starts the service. Re-running it upgrades
# in place: the binary is replaced atomically, the config is kept (only the lines the options name
# are set) and the agent restarted.
set -eu

die() {
  echo "install.sh: $*" >&2
  exit 1
}
say() { echo "install.sh: $*"; }

usage() {
  sed -n '2,/^set -eu/p' "$0" 2>/dev/null | sed '$d' | sed 's/^# \{0,1\}//'
}

root=/
broker=
cgroup_root=/sys/fs/cgroup
proc_cgroups=/proc/cgroups
arch=$(uname -m)
start=yes
source=
agent_id=
attributes=
systemd=yes
agent_bin=bramble-agent
credential=

while [ $# -gt 0 ]; do
  case "$1" in
    --broker) [ $# -ge 2 ] || die "--broker needs a URL"; broker=$2; shift 2 ;;
    --root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift 2 ;;
    --cgroup-root) [ $# -ge 2 ] || die "--cgroup-root needs a directory"; cgroup_root=$2; shift 2 ;;
    --proc-cgroups) [ $# -ge 2 ] || die "--proc-cgroups needs a file"; proc_cgroups=$2; shift 2 ;;
    --arch) [ $# -ge 2 ] || die "--arch needs a value"; arch=$2; shift 2 ;;
    --agent-id) [ $# -ge 2 ] || die "--agent-id needs an id"; agent_id=$2; shift 2 ;;
    --attribute)
      [ $# -ge 2 ] || die "--attribute needs KEY=VALUE"
      attributes="$attributes$2
"
      shift 2
      ;;
    --credential) [ $# -ge 2 ] || die "--credential needs a file (or - for stdin)"; credential=$2; shift 2 ;;
    --no-systemd) systemd=no; shift ;;
    --tls) agent_bin=bramble-agent-tls; shift ;;
    --no-start) start=no; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$source" ] || die "only one SOURCE, got $source and $1"; source=$1; shift ;;
  esac
done

# ----- the architecture -----
case "$arch" in
  aarch64 | arm64) elf_machine=b7; deb_arch=arm64 ;;
  armv7l | armv8l) elf_machine=28; deb_arch=armhf ;;
  x86_64) elf_machine=3e; deb_arch=amd64 ;;
  armv6l)
    die "this is an ARMv6 board (Pi Zero W / Pi 1): not supported. Bramble is built with Rust's
  armv7 and aarch64 targets; ARMv6 needs its own build (arm-unknown-linux-gnueabihf), which is not
  made or tested, so none is shipped. A Pi Zero 2 W, Pi 2 (v1.2), 3, 4 or 5 works." ;;
  *) die "unsupported architecture '$arch' (supported: aarch64, armv7l)" ;;
esac
say "architecture $arch"

case "$broker" in
  *[!A-Za-z0-9.:/_\[\],-]*) die "--broker '$broker' has characters a broker URL does not" ;;
  *,,* | *,) die "--broker '$broker' has an empty entry in its list" ;;
esac
# One URL, or a comma list of them (the agent fails over between them).
old_ifs=$IFS
IFS=,
set -f # `[::1]` is not a glob
for url in $broker; do
  case "$url" in
    mqtt://?* | mqtts://?*) ;;
    *) die "--broker '$url' is not an mqtt:// or mqtts:// URL (e.g. mqtt://192.168.1.10:1883)" ;;
  esac
done
set +f
IFS=$old_ifs

case "$agent_id" in
  *[!A-Za-z0-9._-]*) die "--agent-id '$agent_id': ids are letters, digits, '.', '_' and '-'" ;;
esac
[ ${#agent_id} -le 32 ] || die "--agent-id '$agent_id' is longer than 32 bytes"
# Each attribute: KEY=VALUE, checked so that it can be written as a TOML line as is.
attr_lines=
while IFS= read -r kv; do
  [ -n "$kv" ] || continue
  case "$kv" in *=*) ;; *) die "--attribute '$kv' is not KEY=VALUE" ;; esac
  key=${kv%%=*}
  value=${kv#*=}
  case "$key" in
    '' | *[!A-Za-z0-9_-]*) die "--attribute '$kv': keys are letters, digits, '_' and '-'" ;;
  esac
  [ ${#key} -le 16 ] || die "--attribute '$kv': the key is longer than 16 bytes"
  [ "$key" != isolation ] || die "--attribute '$kv': isolation is set by the agent itself"
  case "$value" in
    *[!\ -~]* | *'"'* | *\\*) die "--attribute '$kv': the value has a character TOML would need escaped" ;;
  esac
  [ ${#value} -le 32 ] || die "--attribute '$kv': the value is longer than 32 bytes"
  attr_lines="$attr_lines$key = \"$value\"
"
done <<EOF_ATTRS
$attributes
EOF_ATTRS

if [ "$root" = / ]; then
  [ "$(id -u)" -eq 0 ] || die "run as root (sudo), or use --root DIR to stage the files"
  dest=
else
  mkdir -p "$root"
  dest=$(cd "$root" && pwd)
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# ----- the board's credential (read first: stdin may carry it) -----
if [ -n "$credential" ]; then
  (
    umask 077
    if [ "$credential" = - ]; then cat >"$tmp/agent.credential"; else cat -- "$credential" >"$tmp/agent.credential"; fi
  ) || die "cannot read the credential file $credential"
  # Its agent name, from `principal = "agent-NAME"` (the secret is never printed).
  cred_id=$(sed -n 's/^principal *= *"agent-\([A-Za-z0-9._-]*\)".*$/\1/p' "$tmp/agent.credential" | head -n 1)
  [ -n "$cred_id" ] || die "--credential $credential is not an agent's credential file (principal = \"agent-NAME\")"
  grep -Eq '^secret *= *"[0-9a-fA-F]{64}"' "$tmp/agent.credential" ||
    die "--credential $credential has no 64-hex-digit secret"
  if [ -z "$agent_id" ]; then
    agent_id=$cred_id
  elif [ "$agent_id" != "$cred_id" ]; then
    die "--credential is agent-$cred_id's but --agent-id is $agent_id: an agent logs in only as itself"
  fi
fi

# ----- fetch and unpack the source -----
case "$source" in
  http://* | https://*)
    name=${source##*/}
    say "downloading $source"
    if command -v curl >/dev/null 2>&1; then
      curl -fsSL -o "$tmp/$name" "$source" || die "cannot download $source"
    elif command -v wget >/dev/null 2>&1; then
      wget -q -O "$tmp/$name" "$source" || die "cannot download $source"
    else
      die "neither curl nor wget is installed to download $source"
    fi
    source=$tmp/$name
    ;;
esac

files=
deb=
case "$source" in
  '')
    files=$(cd "$(dirname "$0")" && pwd)
    [ -f "$files/bramble-agent" ] ||
      die "no SOURCE given and no bramble-agent beside $0 (give a tarball or .deb, path or URL)"
    ;;
  *.deb)
    [ -f "$source" ] || die "no such file: $source"
    deb=$source
    ;;
  *.tar.gz | *.tgz)
    [ -f "$source" ] || die "no such file: $source"
    mkdir "$tmp/x"
    tar -xzf "$source" -C "$tmp/x" || die "cannot unpack $source"
    bin=$(find "$tmp/x" -type f -name bramble-agent | head -n 1)
    [ -n "$bin" ] || die "$source holds no bramble-agent"
    files=$(dirname "$bin")
    ;;
  *) die "SOURCE must be a .tar.gz or a .deb: $source" ;;
esac

# ----- install the files -----
conf=$dest/etc/bramble/agent.toml
had_conf=no
[ -f "$conf" ] && had_conf=yes

if [ -n "$deb" ]; then
  deb_file_arch=$(dpkg-deb --field "$deb" Architecture 2>/dev/null) || die "$deb is not a .deb"
  [ "$deb_file_arch" = "$deb_arch" ] ||
    die "$deb is for $deb_file_arch, this board is $deb_arch ($arch)"
  if [ -z "$dest" ]; then
    say "installing $deb with dpkg"
    dpkg -i "$deb"
  else
    # Staging: the package's files without dpkg's database (an existing config is kept).
    [ "$had_conf" = no ] || cp "$conf" "$tmp/kept.toml"
    dpkg-deb -x "$deb" "$dest"
    [ "$had_conf" = no ] || cp "$tmp/kept.toml" "$conf"
  fi
else
  for f in "$agent_bin" agent.toml bramble-agent.service; do
    [ -f "$files/$f" ] || die "$f is missing from the source ($files)"
  done
  # The binary must be for this board: ELF e_machine, bytes 18-19 (little-endian).
  machine=$(od -An -tx1 -j18 -N1 "$files/$agent_bin" | tr -d ' \n')
  [ "$machine" = "$elf_machine" ] ||
    die "the bramble-agent in the source is not built for $arch (ELF machine 0x$machine)"
  mkdir -p "$dest/usr/bin" "$dest/etc/bramble" "$dest/lib/systemd/system" "$dest/var/lib/bramble"
  # Copy then rename, so a running agent's binary is replaced, not overwritten in place.
  cp "$files/$agent_bin" "$dest/usr/bin/.bramble-agent.new"
  chmod 0755 "$dest/usr/bin/.bramble-agent.new"
  mv -f "$dest/usr/bin/.bramble-agent.new" "$dest/usr/bin/bramble-agent"
  cp "$files/bramble-agent.service" "$dest/lib/systemd/system/bramble-agent.service"
  chmod 0644 "$dest/lib/systemd/system/bramble-agent.service"
  if [ "$had_conf" = no ]; then
    cp "$files/agent.toml" "$conf"
    chmod 0644 "$conf"
  fi
fi
say "installed $dest/usr/bin/bramble-agent and $dest/lib/systemd/system/bramble-agent.service"
if [ "$had_conf" = yes ]; then
  say "kept the existing $conf"
else
  say "installed the default $conf"
fi

# Puts $tmp/agent.toml in the place of $conf with one rename, keeping the config's mode.
replace_conf() {
  cp "$tmp/agent.toml" "$conf.new"
  chmod --reference="$conf" "$conf.new"
  mv -f "$conf.new" "$conf"
}

# Sets the top-level `$1 = "$2"` line of $conf: replaces it, or adds it at the top (before any
# [table]).
set_top_key() {
  if grep -q "^ *$1 *=" "$conf"; then
    sed "s|^ *$1 *=.*|$1 = \"$2\"|" "$conf" >"$tmp/agent.toml"
  else
    { echo "$1 = \"$2\""; cat "$conf"; } >"$tmp/agent.toml"
  fi
  replace_conf
  say "$1 set to $2 in $conf"
}

[ -z "$broker" ] || set_top_key broker "$broker"
if [ -n "$credential" ]; then
  cred_file=$dest/etc/bramble/agent.credential
  # Created private, then renamed over the old one: never readable by others, never half written.
  cp "$tmp/agent.credential" "$cred_file.new"
  chmod 0600 "$cred_file.new"
  [ "$(id -u)" -ne 0 ] || chown 0:0 "$cred_file.new"
  mv -f "$cred_file.new" "$cred_file"
  say "installed the credential of agent-$cred_id as $cred_file (mode 0600)"
  set_top_key credential_file /etc/bramble/agent.credential
fi
[ -z "$agent_id" ] || set_top_key agent_id "$agent_id"

if [ -n "$attr_lines" ]; then
  # The `key = "value"` lines go right below the [attributes] header (one is appended when there
  # is none), replacing the uncommented lines of those keys in the table. The rest is kept.
  printf '%s' "$attr_lines" >"$tmp/attrs"
  awk -v attrs="$tmp/attrs" '
    BEGIN {
      while ((getline line < attrs) > 0) {
        k = line; sub(/ *=.*/, "", k); if (!(k in val)) key[++n] = k; val[k] = line
      }
    }
    function put_all() { for (i = 1; i <= n; i++) print val[key[i]] }
    /^[ \t]*\[/ { in_attrs = 0 }
    /^[ \t]*\[attributes\][ \t]*(#.*)?$/ { seen = 1; in_attrs = 1; print; put_all(); next }
    in_attrs && /^[ \t]*[A-Za-z0-9_-]+[ \t]*=/ {
      k = $0; sub(/^[ \t]*/, "", k); sub(/[ \t]*=.*/, "", k)
      if (k in val) next
    }
    { print }
    END { if (!seen) { print ""; print "[attributes]"; put_all() } }
' "$conf" >"$tmp/agent.toml"
  replace_conf
  say "attributes set in $conf: $(printf '%s' "$attr_lines" | tr '\n' ' ')"
fi

# ----- the `bramble` system user tasks run as -----
# Tasks run as `bramble` ([tasks] user in agent.toml), never as root unless the config allows it.
# It is created if missing, with its own group, and added to the device groups the board has, so
# sensor tasks can open /dev/i2c-*, /dev/gpiochip*, cameras and serial ports.
task_groups=
for g in i2c gpio video dialout spi; do
  if getent group "$g" >/dev/null 2>&1; then task_groups="$task_groups${task_groups:+,}$g"; fi
done
if [ -n "$dest" ]; then
  say "staged: the bramble user is not created below $dest (a real install creates it)"
else
  if ! getent passwd bramble >/dev/null 2>&1; then
    own_group=--user-group
    getent group bramble >/dev/null 2>&1 && own_group=--gid=bramble
    if useradd --system "$own_group" --no-create-home --shell /usr/sbin/nologin bramble; then
      say "created the system user bramble (tasks run as it)"
    else
      echo "install.sh: WARNING: cannot create the user bramble, so the agent starts no task. Create it:" >&2
      echo "      sudo useradd --system --no-create-home --shell /usr/sbin/nologin bramble" >&2
    fi
  fi
  if [ -n "$task_groups" ] && getent passwd bramble >/dev/null 2>&1; then
    usermod -a -G "$task_groups" bramble && say "the user bramble is in the device groups $task_groups"
  fi
fi

# ----- the memory cgroup controller -----
memory=unknown
if [ -f "$cgroup_root/cgroup.controllers" ]; then
  if grep -qw memory "$cgroup_root/cgroup.controllers"; then memory=yes; else memory=no; fi
elif [ -f "$proc_cgroups" ]; then
  # cgroup v1: `memory <hierarchy> <num_cgroups> <enabled>`
  if awk '$1 == "memory" && $4 == 1 { found = 1 } END { exit !found }' "$proc_cgroups"; then
    memory=yes
  else
    memory=no
  fi
fi
case "$memory" in
  yes) say "the memory cgroup controller is enabled: tasks get memory limits" ;;
  no)
    cmdline=/boot/firmware/cmdline.txt
    [ -f "$dest$cmdline" ] || [ ! -f "$dest/boot/cmdline.txt" ] || cmdline=/boot/cmdline.txt
    echo "install.sh: WARNING: the memory cgroup controller is not enabled, so the agent runs tasks" >&2
    echo "  WITHOUT limits (isolation=none). To fix it, append" >&2
    echo "      cgroup_enable=memory cgroup_memory=1" >&2
    echo "  to the single line of $cmdline and reboot, e.g.:" >&2
    echo "      sudo sed -i '1 s/\$/ cgroup_enable=memory cgroup_memory=1/' $cmdline && sudo reboot" >&2
    ;;
  *) say "cannot tell whether the memory cgroup controller is enabled (no $cgroup_root)" ;;
esac

# ----- the service -----
pidfile=/run/bramble-agent.pid
if [ -n "$dest" ]; then
  say "staged below $dest; systemd was not touched"
elif [ "$systemd" = no ]; then
  # Without systemd: stop the agent this script started before (its pid file, if that process is
  # still the agent), then start the new one in its own session. Its tasks keep running, as with
  # the unit's KillMode=process, and the new agent adopts them from its checkpoint.
  if [ -f "$pidfile" ]; then
    old=$(cat "$pidfile")
    case "$old" in
      '' | *[!0-9]*) ;;
      *)
        if [ -r "/proc/$old/cmdline" ] && tr '\0' ' ' <"/proc/$old/cmdline" | grep -q bramble-agent; then
          kill "$old" 2>/dev/null || true
          i=0
          while kill -0 "$old" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
          kill -9 "$old" 2>/dev/null || true
          say "stopped the previous agent (pid $old)"
        fi
        ;;
    esac
    rm -f "$pidfile"
  fi
  if [ "$start" = yes ]; then
    mkdir -p /var/log /var/lib/bramble
    setsid nohup /usr/bin/bramble-agent --config "$conf" </dev/null >>/var/log/bramble-agent.log 2>&1 &
    echo $! >"$pidfile"
    say "bramble-agent started without systemd (pid $!, log /var/log/bramble-agent.log)"
  else
    say "installed; start it with: setsid /usr/bin/bramble-agent --config $conf"
  fi
elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
  systemctl enable bramble-agent.service
  if [ "$start" = yes ]; then
    systemctl restart bramble-agent.service
    say "bramble-agent is running: journalctl -u bramble-agent -f"
  else
    say "enabled; start it with: systemctl start bramble-agent"
  fi
else
  say "systemd is not running here: start the agent with /usr/bin/bramble-agent --config /etc/bramble/agent.toml"
fi
