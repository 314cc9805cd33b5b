#!/usr/bin/env bash
# Keep checkpoints/ and docs/ out of what a device call carries, and bring them back (docs/GPU.md).
# A call carries the tracked files and the untracked ones git does not ignore, 64 MiB in all;
# these two folders (about 38 MB) would crowd out the payload. `untrack` drops them from the
# index and ignores them locally (.git/info/exclude); `retrack` undoes both and checks that
# nothing under them shows as deleted. The files on disk are never touched. Make no commit
# in between: it would record the folders as deleted.
# Usage: scripts/gpu/large_folders.sh untrack|retrack
set -euo pipefail
FOLDERS=(checkpoints docs)
cd "$(git rev-parse --show-toplevel)"
EXCLUDE=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCLUDE")"
touch "$EXCLUDE"

case "${1:-}" in
untrack)
    for folder in "${FOLDERS[@]}"; do
        if grep -qxF "/$folder/" "$EXCLUDE"; then
            echo "large_folders: /$folder/ is already excluded: run 'retrack' first" >&2
            exit 1
        fi
    done
    git rm -r -q --cached "${FOLDERS[@]}"
    printf '/%s/\n' "${FOLDERS[@]}" >> "$EXCLUDE"
    echo "large_folders: ${FOLDERS[*]} untracked; make no commit until 'retrack'"
    ;;
retrack)
    git reset -q -- "${FOLDERS[@]}"
    for folder in "${FOLDERS[@]}"; do
        sed -i "\#^/$folder/\$#d" "$EXCLUDE"
    done
    deleted=$(git status --porcelain -- "${FOLDERS[@]}" | grep -E '^(D|.D)' || true)
    if [[ -n $deleted ]]; then
        echo "large_folders: files show as deleted after retrack:" >&2
        echo "$deleted" >&2
        exit 1
    fi
    echo "large_folders: ${FOLDERS[*]} tracked again"
    ;;
*)
    echo "usage: scripts/gpu/large_folders.sh untrack|retrack" >&2
    exit 2
    ;;
esac
