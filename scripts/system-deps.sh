#!/usr/bin/env bash
# Installs the system packages the tests need when they are missing, by group:
#   mpi      Open MPI (mpicc, mpirun, headers), libclang for bindgen, and iproute2 (`ip`, for
#            the test that makes hosts in network namespaces)
#   browser  Chromium, for the test that opens a run report headless
#   perf     libb64, which Triton's perf_analyzer (from the tritonclient wheel) links to
#   bench    wrk and h2load (HTTP/1 and HTTP/2 load generators) for the serving benchmarks
#            and the soak in bench/
# Usage: scripts/system-deps.sh [mpi] [browser] [perf] [bench]. Debian/Ubuntu (apt-get).
set -euo pipefail

have_mpi() {
  command -v mpicc >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1 &&
    command -v ip >/dev/null 2>&1 &&
    ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so'
}
have_browser() {
  command -v chromium >/dev/null 2>&1
}
have_perf() {
  ldconfig -p 2>/dev/null | grep -q 'libb64\.so\.0d'
}
have_bench() {
  command -v wrk >/dev/null 2>&1 && command -v h2load >/dev/null 2>&1
}

packages=()
skip=()
for group in "$@"; do
  case "$group" in
    mpi)
      have_mpi || packages+=(libopenmpi-dev openmpi-bin libclang-dev iproute2)
      skip+=("MODELFORGE_MPI=0") ;;
    browser)
      have_browser || packages+=(chromium)
      skip+=("MODELFORGE_BROWSER=0") ;;
    perf)
      have_perf || packages+=(libb64-0d)
      skip+=("MODELFORGE_PERF=0") ;;
    bench)
      have_bench || packages+=(wrk nghttp2-client) ;;
    *)
      echo "error: unknown group $group — use mpi, browser, perf and/or bench" >&2
      exit 2 ;;
  esac
done
[ "${#packages[@]}" = 0 ] && exit 0

without="run the tests without them: ${skip[*]} scripts/test.sh"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: ${packages[*]} are missing and this system has no apt-get — install them" \
    "(or their equivalents: Open MPI or MPICH, libclang, Chromium, libb64) with your package" \
    "manager, or $without" >&2
  exit 2
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "error: installing ${packages[*]} needs root — run as root, install them yourself," \
      "or $without" >&2
    exit 2
  fi
  sudo=(sudo)
fi
echo "installing ${packages[*]} (for the $* tests)" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
  "${packages[@]}" >/dev/null
for group in "$@"; do
  "have_$group" || { echo "error: ${packages[*]} installed, but the $group tools are still missing" >&2; exit 2; }
done
