#!/usr/bin/env bash
# Starts the Docker engine if it is not running and builds the local test images once (no registry is reachable):
#   local/busybox:1  busybox with sh, echo, cat, ls, … (most tests)
#   local/python:3   Debian minbase with python3 (the benchmarks and the README's example)
# The test SSH hosts themselves (one sshd per loopback address) are made by test/support/sshHosts.ts.
set -euo pipefail

if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd"
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not come up:"; tail -20 /var/log/dockerd.log; exit 1; }
fi

mkdir -p /run/sshd

if ! docker image inspect local/busybox:1 >/dev/null 2>&1; then
  echo "building local/busybox:1"
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/tmp" "$root/workspace"
  cp /bin/busybox "$root/bin/busybox"
  for a in sh echo cat ls sleep env printf test true false mkdir rm wc head tail grep sed id stat touch; do
    ln -s busybox "$root/bin/$a"
  done
  tar -C "$root" -c . | docker import - local/busybox:1 >/dev/null
  rm -rf "$root"
fi

if ! docker image inspect local/python:3 >/dev/null 2>&1; then
  echo "building local/python:3 (debootstrap, about a minute)"
  root=$(mktemp -d)
  debootstrap --variant=minbase --include=python3 bookworm "$root" >/tmp/debootstrap.log 2>&1 || { tail -20 /tmp/debootstrap.log; exit 1; }
  tar -C "$root" -c . | docker import - local/python:3 >/dev/null
  rm -rf "$root"
fi
# Debug on GPU: Debian's debugpy (and what it needs) in local/python:3, from the Debian packages' own files, so a job
# can run a program under debugpy with no network at run time.
if ! docker run --rm local/python:3 python3 -c 'import debugpy' >/dev/null 2>&1; then
  echo "adding Debian's python3-debugpy to local/python:3"
  d=$(mktemp -d)
  (cd "$d" && apt-get download python3-debugpy python3-pydevd python3-bytecode python3-coverage >/dev/null) || { echo "apt-get download python3-debugpy failed"; exit 1; }
  mkdir "$d/root"
  for f in "$d"/*.deb; do dpkg -x "$f" "$d/root"; done
  c=$(docker create local/python:3 true)
  docker cp "$d/root/usr/." "$c:/usr/"
  docker commit "$c" local/python:3 >/dev/null
  docker rm "$c" >/dev/null
  rm -rf "$d"
  docker run --rm local/python:3 python3 -c 'import debugpy; print("debugpy", debugpy.__version__, "in local/python:3")'
fi
docker image ls --filter reference='local/*'
