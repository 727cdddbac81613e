#!/usr/bin/env bash
# One command to set up phenossl on a fresh Debian/Ubuntu machine and then run something:
#   bash scripts/setup.sh demo   install, then run `phenossl demo` on the bundled sample plate
#   bash scripts/setup.sh test   install with the test extras, then run the test suite under Xvfb
# It installs the Debian packages napari needs for a (virtual) screen when they are missing, creates
# .venv/ beside this repository, and installs phenossl into it. Safe to run again.
set -euo pipefail

what="${1:-demo}"
shift || true
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
venv="${PHENOSSL_VENV:-$repo/.venv}"

debian_packages=(
  python3-venv xvfb xauth libgl1 libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
  libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0
  libxcb-cursor0 libdbus-1-3 libfontconfig1
)

install_debian_packages() {
  command -v dpkg-query >/dev/null 2>&1 || { echo "not a Debian system: install Xvfb and Mesa OpenGL yourself"; return 0; }
  local missing=()
  for pkg in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "Missing Debian packages (${missing[*]}) and no root/sudo to install them." >&2
      echo "Ask your administrator for: apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
  fi
  echo "Installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

torch_pair() {
  # The torch/torchvision pair known to install and import together (see README, "Installing torch").
  if [ -n "${PHENOSSL_TORCH:-}" ]; then echo "$PHENOSSL_TORCH"; return; fi
  case "$(uname -m)" in
    aarch64|arm64) echo "torch==2.9.1 torchvision==0.24.1" ;;
    *) echo "torch==2.14.1 torchvision==0.29.1" ;;
  esac
}

check_python() {
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && return 0
  echo "phenossl needs Python 3.11 or newer; python3 here is $(python3 --version 2>&1 || echo 'missing')." >&2
  echo "Install a newer Python (e.g. apt-get install python3.11, or pyenv) and run this again." >&2
  exit 1
}

install_python() {
  local extras="$1"
  check_python
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  # shellcheck disable=SC2046
  "$venv/bin/python" -m pip install -q $(torch_pair)
  "$venv/bin/python" -m pip install -q -e ".[$extras]"
}

install_debian_packages
case "$what" in
  demo)
    install_python napari
    # a menu entry for napari with phenossl, so a biologist never needs this terminal again
    bash "$repo/scripts/install_launcher.sh" "$venv" || echo "(no application-menu entry: see above)"
    "$venv/bin/phenossl" demo "$@"
    ;;
  test)
    install_python test
    # pytest-xvfb starts a virtual X server for the napari tests (a real one: offscreen Qt has no OpenGL)
    "$venv/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: bash scripts/setup.sh demo|test [extra arguments]" >&2
    exit 2
    ;;
esac
