#!/usr/bin/env bash
# Transparent checkpoint (CRIU) for the Docker test hosts. Debian 12's CRIU 3.17 fails `criu check` on these
# machines' kernel (vdso), so CRIU 4.1 is taken from Debian trixie's packages, unpacked (never installed over the
# system's libc) under /opt/gpurun-criu and run with trixie's own loader and libc by a wrapper at
# /usr/local/bin/criu (runc finds it on the engine's PATH; the test hosts' logins find it too). Then the Docker
# engine runs in experimental mode (`docker checkpoint` needs it). Writes /opt/gpurun-criu/installed when `criu
# check` passed and the engine is experimental: the transparent-checkpoint suites fail in CI only when that file
# says CRIU was installed.
set -euo pipefail
DEST=/opt/gpurun-criu
WRAPPER=/usr/local/bin/criu
rm -f "$DEST/installed"

if [ ! -x "$DEST/x/usr/sbin/criu" ]; then
  R=$(mktemp -d)
  mkdir -p "$R/lists/partial" "$R/cache/archives/partial"
  # The machine's own Debian mirror, with trixie in a private list (the system's apt sources are not touched).
  M=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$M" ] || M=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$M" ] || { echo "35-criu: no Debian mirror found in the apt sources; CRIU not installed"; exit 0; }
  echo "deb $M trixie main" >"$R/sources.list"
  A=(-o "Dir::Etc::SourceList=$R/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$R/lists" -o "Dir::Cache=$R/cache")
  if ! apt-get "${A[@]}" update -qq; then echo "35-criu: trixie's package lists are not reachable; CRIU not installed"; rm -rf "$R"; exit 0; fi
  # criu and the libraries bookworm lacks or has too old (the rest, e.g. gnutls, are bookworm's, which trixie's libc loads).
  (cd "$R" && apt-get "${A[@]}" download criu libcompel1 libc6 libnftables1 libnftnl11 libmnl0 libjansson4 libxtables12 \
    libprotobuf-c1 libnl-3-200 libnet1 2>&1 | grep -v unsandboxed || true)
  mkdir -p "$DEST.new/x"
  for d in "$R"/*.deb; do dpkg -x "$d" "$DEST.new/x"; done
  rm -rf "$DEST" "$R"
  mv "$DEST.new" "$DEST"
fi

LIB=$DEST/x/usr/lib/x86_64-linux-gnu
# write_wrapper [FAULT]: the wrapper; FAULT is CRIU's CRIU_FAULT setting (130: no hardware breakpoints).
# A restore reads /etc/criu/restore.conf (CRIU_CONFIG_FILE; the wrapper knows a restore by its parent, runc restore):
# CRIU 4's new mount engine fails to restore Docker's file bind mount of docker-init (`docker run --init`: "Can't
# remount ... with MS_PRIVATE"), its older one (mntns-compat-mode) restores it; a dump refuses that option, so it
# cannot go in /etc/criu/runc.conf, which runc has CRIU read for both.
write_wrapper() {
  {
    echo '#!/bin/sh'
    echo "# CRIU 4.1 from Debian trixie, run with trixie's loader and libc (installed by gpurun's test/setup/35-criu.sh)."
    if [ -n "${1:-}" ]; then
      echo "# Hardware breakpoints set through ptrace never fire on this machine, so CRIU's dump hangs where it waits"
      echo "# for one to stop the task after its parasite code; CRIU_FAULT=130 makes it step to that point instead."
      echo "export CRIU_FAULT=\${CRIU_FAULT:-$1}"
    fi
    echo "# A restore (runc restore) uses CRIU's older mount engine: see /etc/criu/restore.conf."
    echo 'case " $(tr "\\0" " " </proc/$PPID/cmdline 2>/dev/null) " in *" restore "*) export CRIU_CONFIG_FILE=/etc/criu/restore.conf ;; esac'
    echo "exec $LIB/ld-linux-x86-64.so.2 --library-path $LIB $DEST/x/usr/sbin/criu \"\$@\""
  } >"$WRAPPER"
  chmod 755 "$WRAPPER"
}
# dump_works: dumps (and so kills) a sleeping process; false when the dump fails or hangs.
dump_works() {
  local d pid ok=1
  d=$(mktemp -d)
  setsid sleep 120 </dev/null >/dev/null 2>&1 &
  pid=$!
  timeout 15 "$WRAPPER" dump -t "$pid" -D "$d" --shell-job -o dump.log >/dev/null 2>&1 || ok=0
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [ $ok = 1 ] || tail -n 3 "$d/dump.log" 2>/dev/null | sed 's/^/  dump.log: /'
  rm -rf "$d"
  [ $ok = 1 ]
}
write_wrapper
if ! out=$("$WRAPPER" check 2>&1); then
  echo "35-criu: criu check failed: $out"
  exit 0
fi
echo "criu $("$WRAPPER" --version | head -n 1): check: $(echo "$out" | grep -v Warn | tail -n 1)"
if ! dump_works; then
  echo "criu dump of a sleeping process failed or hung; trying without hardware breakpoints (CRIU_FAULT=130)"
  write_wrapper 130
  dump_works || { echo "35-criu: criu dump does not work on this machine; transparent checkpoint not set up"; exit 0; }
fi
echo "criu dump of a sleeping process: works$(grep -q CRIU_FAULT "$WRAPPER" && echo ' (without hardware breakpoints)')"

mkdir -p /etc/criu
cat >/etc/criu/restore.conf <<'CONF'
# Written by gpurun's test/setup/35-criu.sh, read by CRIU on restores only (the criu wrapper sets CRIU_CONFIG_FILE):
# CRIU's older mount engine restores Docker's file bind mounts.
mntns-compat-mode
CONF
# An earlier version of this script put that option in runc.conf, which breaks every dump.
if [ -f /etc/criu/runc.conf ] && grep -q "Written by gpurun" /etc/criu/runc.conf; then rm -f /etc/criu/runc.conf; fi

# The engine's experimental mode, set in daemon.json (other settings there are kept).
mkdir -p /etc/docker
python3 - <<'PY'
import json, os
p = '/etc/docker/daemon.json'
cfg = json.load(open(p)) if os.path.exists(p) and os.path.getsize(p) else {}
cfg['experimental'] = True
json.dump(cfg, open(p, 'w'), indent=2)
PY
experimental() { [ "$(docker version --format '{{.Server.Experimental}}' 2>/dev/null)" = true ]; }
if ! experimental; then
  pid=$(pgrep -x dockerd | head -n 1 || true)
  if [ -n "$pid" ]; then
    # Experimental mode is read at start only. Running containers are kept across the restart by live restore
    # (turned on by a reload for the restart, off again afterwards), so a developer's containers survive it.
    python3 -c "import json;p='/etc/docker/daemon.json';c=json.load(open(p));c['live-restore']=True;json.dump(c,open(p,'w'),indent=2)"
    kill -HUP "$pid"; sleep 1
    echo "restarting dockerd in experimental mode"
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  # Started with no descriptor but stdio: one inherited from the caller (the heavy-test lock's, under flock) would be
  # held by dockerd and containerd for as long as they run.
  (for fd in $(ls "/proc/$BASHPID/fd"); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done; exec nohup dockerd >>/var/log/dockerd.log 2>&1 </dev/null) &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  if [ -n "$pid" ]; then
    python3 -c "import json;p='/etc/docker/daemon.json';c=json.load(open(p));c.pop('live-restore',None);json.dump(c,open(p,'w'),indent=2)"
    kill -HUP "$(pgrep -x dockerd | head -n 1)"
  fi
fi
experimental || { echo "35-criu: the Docker engine is not in experimental mode; see /var/log/dockerd.log"; tail -5 /var/log/dockerd.log; exit 0; }
echo "docker $(docker version --format '{{.Server.Version}}'): experimental"
date -u +%FT%TZ >"$DEST/installed"
