#!/usr/bin/env bash
# Installs the system packages the MPI build and tests need when they are missing:
# Open MPI (mpicc, mpirun, headers), libclang for bindgen, and iproute2 (`ip`, for the
# test that makes hosts in network namespaces). Debian/Ubuntu (apt-get).
set -euo pipefail

have() {
  command -v mpicc >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1 &&
    command -v ip >/dev/null 2>&1 &&
    ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so'
}
have && exit 0

packages=(libopenmpi-dev openmpi-bin libclang-dev iproute2)
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: Open MPI and libclang are missing and this system has no apt-get — install" \
    "Open MPI (or MPICH) and libclang with your package manager, or run the tests without" \
    "MPI: MODELFORGE_MPI=0 scripts/test.sh" >&2
  exit 2
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "error: installing ${packages[*]} needs root — run as root, install them yourself," \
      "or run the tests without MPI: MODELFORGE_MPI=0 scripts/test.sh" >&2
    exit 2
  fi
  sudo=(sudo)
fi
echo "installing ${packages[*]} (for the mpi feature)" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
  "${packages[@]}" >/dev/null
have || { echo "error: ${packages[*]} installed, but mpicc, mpirun, ip or libclang is still missing" >&2; exit 2; }
