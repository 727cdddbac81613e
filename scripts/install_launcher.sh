#!/usr/bin/env bash
# Put "napari (phenossl)" in the desktop's application menu, so napari with phenossl starts without a
# terminal: a freedesktop.org .desktop entry that runs the set-up's environment's napari.
#   bash scripts/install_launcher.sh [VENV]     (default VENV: .venv beside this repository)
# Writes $XDG_DATA_HOME/applications/phenossl-napari.desktop (default ~/.local/share/applications);
# replaces only an entry it wrote itself. Safe to run again.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$repo/.venv}"
if [ ! -x "$venv/bin/napari" ]; then
  echo "no napari in $venv: run 'bash scripts/setup.sh demo' first" >&2
  exit 1
fi
venv="$(cd "$venv" && pwd)"
napari="$venv/bin/napari"
folder="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
entry="$folder/phenossl-napari.desktop"
marker="X-phenossl-launcher=true"
if [ -e "$entry" ] && ! grep -qx "$marker" "$entry"; then
  echo "$entry exists and was not written by phenossl; left as it is" >&2
  exit 1
fi
mkdir -p "$folder"
tmp="$(mktemp "$folder/.phenossl-napari.XXXXXX")"
cat > "$tmp" <<DESKTOP
[Desktop Entry]
Type=Application
Name=napari (phenossl)
Comment=Phenotype discovery with self-supervised learning: open a plate, then Plugins > phenossl
Exec="$napari"
Path=$HOME
Terminal=false
Categories=Science;Biology;Graphics;
$marker
DESKTOP
chmod 644 "$tmp"
mv -f "$tmp" "$entry"
echo "Added 'napari (phenossl)' to the application menu ($entry)"
