#!/usr/bin/env bash
# Build deploy/Dockerfile (the CPU image) on a machine with no container registry and no Docker
# daemon: buildah (chroot isolation, no runc needed) plus a base image made with debootstrap.
#
#   sudo deploy/build-local.sh                 # -> localhost/forum-sentinel:cpu in buildah's storage
#   sudo OUT_TAR=/tmp/fs.tar deploy/build-local.sh   # also write a docker-archive (docker load -i)
#   sudo IMAGE=cuda deploy/build-local.sh      # deploy/Dockerfile.cuda -> localhost/forum-sentinel:cuda
#
# Needs: root, Debian/Ubuntu host, `apt-get install buildah debootstrap`, a reachable Debian mirror
# and PyPI. Nothing in deploy/Dockerfile is changed; only its two ARGs are overridden:
#
# - PYTHON_IMAGE: python:3.11.14-slim-bookworm is replaced by a local stand-in, Debian bookworm
#   minbase + Debian's python3 (3.11.2, in /usr/bin, not 3.11.14 in /usr/local) + python3-venv +
#   python-is-python3 + ca-certificates, security updates applied. Not the official image: same
#   distro and minor Python, different patch level and layout. Built once, then reused.
# - TORCH_INDEX: if download.pytorch.org is reachable, pass TORCH_INDEX=https://download.pytorch.org/whl/cpu
#   and it is used as is. Otherwise (the default here) the host's pip downloads torch==$TORCH_VERSION
#   and its dependencies, the torch wheel must be a +cpu build (checked), and they are served as a
#   PEP 503 index on 127.0.0.1 for the build. Do NOT use https://pypi.org/simple: PyPI's Linux torch
#   is the CUDA build and drags in GBs of nvidia-* wheels.
#
# IMAGE=cuda builds deploy/Dockerfile.cuda the same way (Ubuntu mirror instead of Debian's):
# - CUDA_IMAGE: nvidia/cuda:13.0.1-runtime-ubuntu24.04 is replaced by Ubuntu 24.04 (noble) minbase +
#   ca-certificates, with the official image's apt sources, user ubuntu (1000) and CUDA/NVIDIA env vars,
#   updates applied. It has NO CUDA libraries (/usr/local/cuda), no NVIDIA entrypoint, no curl/gnupg:
#   torch's nvidia-* pip wheels bring the CUDA runtime, so only GPU-less checks differ from the real base.
#   debootstrap's gutsy script stands in for a missing noble one; the Ubuntu archive keyring comes from
#   Ubuntu's ubuntu-keyring .deb (sha256-pinned) when the host has none.
# - TORCH_INDEX defaults to https://pypi.org/simple: PyPI's Linux torch==2.13.0 is the cu130 build that
#   Dockerfile.cuda wants (about 3 GB of nvidia-* wheels).
#
# Build-time only (never in a layer): the host CA bundle is bind-mounted over the container's for the
# RUN steps when it exists (HOST_CA_BUNDLE= to skip), for hosts behind a TLS-intercepting proxy. The image
# is written in docker format: the OCI format has no HEALTHCHECK and buildah would drop it.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CONTEXT=${CONTEXT:-$REPO}                       # build context (repository root)
WORK=${WORK:-/var/tmp/forum-sentinel-build}     # rootfs, wheelhouse
IMAGE=${IMAGE:-cpu}                             # cpu: deploy/Dockerfile; cuda: deploy/Dockerfile.cuda
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_INDEX=${TORCH_INDEX:-}
case $IMAGE in
  cpu)  BASE_TAG=${BASE_TAG:-localhost/python:3.11-bookworm-local}; TAG=${TAG:-localhost/forum-sentinel:cpu}
        DOCKERFILE=$REPO/deploy/Dockerfile; BASE_ARG=PYTHON_IMAGE ;;
  cuda) BASE_TAG=${BASE_TAG:-localhost/cuda-standin:noble}; TAG=${TAG:-localhost/forum-sentinel:cuda}
        DOCKERFILE=$REPO/deploy/Dockerfile.cuda; BASE_ARG=CUDA_IMAGE; TORCH_INDEX=${TORCH_INDEX:-https://pypi.org/simple} ;;
  *)    echo "IMAGE must be cpu or cuda" >&2; exit 1 ;;
esac
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
UBUNTU_MIRROR=${UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}
HOST_CA_BUNDLE=${HOST_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
INDEX_PORT=${INDEX_PORT:-8765}
OUT_TAR=${OUT_TAR:-}
NICE=${NICE:-nice -n 19}

[ "$(id -u)" = 0 ] || { echo "run as root (buildah storage, debootstrap)" >&2; exit 1; }
for c in buildah debootstrap; do command -v $c >/dev/null || { echo "missing $c: apt-get install -y buildah debootstrap" >&2; exit 1; }; done
mkdir -p "$WORK"

# 1. Base image: debootstrap -> buildah from scratch -> commit. Skipped when it already exists.
# commit_base ROOTFS CONFIG-OPTIONS...: apply updates, slim, commit as $BASE_TAG.
commit_base() {
  local rootfs=$1 ctr mnt; shift
  cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
  $NICE chroot "$rootfs" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -y -qq upgrade && apt-get clean'
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* \
         "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* "$rootfs/etc/hostname"
  : > "$rootfs/etc/resolv.conf"
  ctr=$(buildah from scratch); mnt=$(buildah mount "$ctr")
  tar -C "$rootfs" -cf - . | tar -C "$mnt" -xpf -
  buildah umount "$ctr"
  buildah config "$@" "$ctr"
  buildah commit --rm "$ctr" "$BASE_TAG"
  rm -rf "$rootfs"
}
if buildah images -q "$BASE_TAG" >/dev/null 2>&1; then
  :
elif [ "$IMAGE" = cpu ]; then
  rootfs=$WORK/rootfs; rm -rf "$rootfs"
  $NICE debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$rootfs" "$DEBIAN_MIRROR"
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
    "$DEBIAN_MIRROR" "$DEBIAN_MIRROR" > "$rootfs/etc/apt/sources.list"
  commit_base "$rootfs" --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 --label org.opencontainers.image.description="debootstrap bookworm minbase + python3: local stand-in for python:3.11-slim-bookworm"
else
  rootfs=$WORK/rootfs-noble; rm -rf "$rootfs"
  keyring=/usr/share/keyrings/ubuntu-archive-keyring.gpg
  if [ ! -f "$keyring" ]; then
    deb=$WORK/ubuntu-keyring.deb
    curl -fsSL -o "$deb" "$UBUNTU_MIRROR/pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb"
    echo "36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8  $deb" | sha256sum -c --quiet
    rm -rf "$WORK/ubuntu-keyring"; dpkg-deb -x "$deb" "$WORK/ubuntu-keyring"
    keyring=$WORK/ubuntu-keyring/usr/share/keyrings/ubuntu-archive-keyring.gpg
  fi
  script=/usr/share/debootstrap/scripts/noble; [ -e "$script" ] || script=/usr/share/debootstrap/scripts/gutsy
  $NICE debootstrap --variant=minbase --include=ca-certificates --keyring="$keyring" noble "$rootfs" "$UBUNTU_MIRROR" "$script"
  rm -f "$rootfs/etc/apt/sources.list"   # the official image's deb822 sources instead
  for s in "$UBUNTU_MIRROR noble noble-updates noble-backports" "http://security.ubuntu.com/ubuntu noble-security"; do
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main restricted universe multiverse\nSigned-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg\n\n' \
      "${s%% *}" "${s#* }"
  done > "$rootfs/etc/apt/sources.list.d/ubuntu.sources"
  chroot "$rootfs" sh -c 'groupadd --gid 1000 ubuntu && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash ubuntu'
  commit_base "$rootfs" --env PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64 --env CUDA_VERSION=13.0.1 \
    --env NVIDIA_VISIBLE_DEVICES=all --env NVIDIA_DRIVER_CAPABILITIES=compute,utility --cmd /bin/bash \
    --label org.opencontainers.image.description="debootstrap noble minbase, no CUDA libraries: local stand-in for nvidia/cuda:13.0.1-runtime-ubuntu24.04"
fi

# 2. The CPU torch index, unless one was given.
server=
cleanup() { [ -z "$server" ] || kill "$server" 2>/dev/null || true; }
trap cleanup EXIT
if [ -z "$TORCH_INDEX" ]; then
  wh=$WORK/wheelhouse; idx=$WORK/index/simple; rm -rf "$wh" "$WORK/index"; mkdir -p "$idx"
  $NICE pip download -q "torch==$TORCH_VERSION" --only-binary :all: --python-version 3.11 \
    --implementation cp --platform manylinux_2_28_x86_64 -d "$wh"
  ls "$wh"/torch-*+cpu-*.whl >/dev/null 2>&1 || {
    echo "the host's pip did not give a +cpu torch wheel (got: $(ls "$wh"/torch-*)); set TORCH_INDEX" >&2; exit 1; }
  for w in "$wh"/*.whl; do   # simple/<normalized project name>/<wheel>; http.server lists the links
    name=$(basename "$w" | cut -d- -f1 | tr 'A-Z_.' 'a-z--'); mkdir -p "$idx/$name"; ln "$w" "$idx/$name/"
  done
  python3 -m http.server --bind 127.0.0.1 --directory "$WORK/index" "$INDEX_PORT" >/dev/null 2>&1 &
  server=$!
  for _ in $(seq 100); do   # until the index answers (at most ~10 s)
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$INDEX_PORT/simple/')" 2>/dev/null && break
    sleep 0.1
  done
  TORCH_INDEX=http://127.0.0.1:$INDEX_PORT/simple
fi

# 3. The image. chroot isolation shares the host network, so 127.0.0.1 is the host's.
vol=()
[ -z "$HOST_CA_BUNDLE" ] || [ ! -f "$HOST_CA_BUNDLE" ] || vol=(--volume "$HOST_CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
$NICE buildah bud --isolation chroot --format docker --layers "${vol[@]}" \
  --build-arg "$BASE_ARG=$BASE_TAG" --build-arg TORCH_INDEX="$TORCH_INDEX" \
  --build-arg TORCH_VERSION="$TORCH_VERSION" \
  -f "$DOCKERFILE" -t "$TAG" "$CONTEXT"

[ -z "$OUT_TAR" ] || buildah push "$TAG" "docker-archive:$OUT_TAR:$TAG"
buildah images "$TAG"
