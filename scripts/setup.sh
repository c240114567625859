#!/usr/bin/env bash
# Idempotent development set-up: .venv (Python 3.11), pinned deps, ROS 2 wheels, colcon build of msg/.
# Each step writes a stamp only when it succeeds; a failed step names itself and its log and
# leaves no stamp, so the next run redoes it instead of mistaking a half-built state for done.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
VENV="$ROOT/.venv"
STAMPS="$VENV/.admn-setup"
LOGS="$ROOT/log/setup"
mkdir -p "$LOGS"

step() {  # step NAME KEY COMMAND...: run COMMAND unless the stamp for NAME already holds KEY
  local name="$1" key="$2"; shift 2
  local stamp="$STAMPS/$name" log="$LOGS/$name.log"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
    echo "setup: $name up to date"
    return 0
  fi
  echo "setup: $name ..."
  rm -f "$stamp"
  if ! "$@" >"$log" 2>&1; then
    echo "setup: FAILED at step '$name'; log: $log" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
  mkdir -p "$STAMPS"
  echo "$key" >"$stamp"
}

hash_of() { cat "$@" | sha256sum | cut -c1-16; }
tree_hash() { find "$@" -type f ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16; }

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "setup: FAILED at step 'python': $PYTHON not found (Python 3.11 is required; set PYTHON=...)" >&2
  exit 1
fi
if [[ "$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "3.11" ]]; then
  echo "setup: FAILED at step 'python': $PYTHON is not Python 3.11 (the ROS 2 wheels are cp311)" >&2
  exit 1
fi

make_venv() { rm -rf "$VENV" && "$PYTHON" -m venv "$VENV" && "$VENV/bin/python" -m pip install -q --upgrade pip; }
# The venv stamp lives inside the venv: a venv without it is a half-made one and is rebuilt.
if [[ ! -f "$STAMPS/venv" ]]; then rm -rf "$VENV"; fi
step venv "$("$PYTHON" --version)" make_venv

install_deps() { "$VENV/bin/python" -m pip install -r requirements.in -c requirements.lock; }
step deps "$(hash_of requirements.in requirements.lock)" install_deps

# The ROS wheels' CMake exports name the include dirs of the interpreter they were built with.
# Point them at this venv's interpreter and numpy (only files inside the venv are touched).
fix_cmake_paths() {
  local py_inc np_inc
  py_inc="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  np_inc="$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')"
  grep -rl --include='*.cmake' '/opt/python/cp311-cp311' "$VENV" | while read -r f; do
    sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g" \
           -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g" "$f"
  done
  ! grep -rq --include='*.cmake' '/opt/python/cp311-cp311' "$VENV"
}
step cmake-paths "$(hash_of requirements.lock)" fix_cmake_paths

# colcon sees the package through build/src/admn_ros -> repo root: CMake refuses exported
# include dirs (numpy's, in .venv) that lie inside the package's source dir, and through the
# link the source dir is build/src/admn_ros, which .venv is not under. deps/tf2_msgs stands in
# for the tf2_msgs the ROS 2 wheels lack (a ROS install has the real one). Tests are
# configured, so `colcon test` works in this workspace too (see docs/INSTALL.md).
colcon_build() {
  # shellcheck disable=SC1091
  source "$VENV/bin/activate"
  export CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV"
  mkdir -p build/src && ln -sfn ../.. build/src/admn_ros && ln -sfn ../../deps/tf2_msgs build/src/tf2_msgs
  colcon build --base-paths build/src --build-base build --install-base install \
    --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=ON
}
step colcon "$(hash_of CMakeLists.txt package.xml msg/*.msg requirements.lock)-$(tree_hash admn_ros launch config models deps)" colcon_build

install_project() { "$VENV/bin/python" -m pip install --no-deps --no-build-isolation -e .; }
step project "$(hash_of setup.py)" install_project

echo "setup: done (. scripts/env.sh to use it)"
