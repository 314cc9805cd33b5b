#!/usr/bin/env bash
# Keep checkpoints/ and docs/ out of what a device call carries, and bring them back (docs/GPU.md).
# A call carries the tracked files and the untracked ones git does not ignore, 64 MiB in all;
# these two folders (about 38 MB) would crowd out the payload. `untrack` drops them from the
# index and ignores them locally (.git/info/exclude); `retrack` undoes both. The files on disk
# are never touched. A commit in between would record the folders as deleted, so `untrack`
# notes HEAD and `retrack` refuses if it moved; `untrack` also refuses while changes under
# the folders are staged, since dropping them from the index would lose what was staged.
# Usage: scripts/gpu/large_folders.sh untrack|retrack
set -euo pipefail
FOLDERS=(checkpoints docs)
cd "$(git rev-parse --show-toplevel)"
EXCLUDE=$(git rev-parse --git-path info/exclude)
STATE=$(git rev-parse --git-path large_folders.head)  # HEAD when untracked; present only in between
mkdir -p "$(dirname "$EXCLUDE")"
touch "$EXCLUDE"

case "${1:-}" in
untrack)
    if [[ -f $STATE ]]; then
        echo "large_folders: already untracked: run 'retrack' first" >&2
        exit 1
    fi
    if ! git diff --cached --quiet -- "${FOLDERS[@]}"; then
        echo "large_folders: changes under ${FOLDERS[*]} are staged: commit or unstage them first" >&2
        exit 1
    fi
    git rev-parse HEAD > "$STATE"
    git rm -r -q --cached "${FOLDERS[@]}"
    printf '/%s/\n' "${FOLDERS[@]}" >> "$EXCLUDE"
    echo "large_folders: ${FOLDERS[*]} untracked; make no commit until 'retrack'"
    ;;
retrack)
    if [[ ! -f $STATE ]]; then
        echo "large_folders: nothing to retrack: 'untrack' was not run" >&2
        exit 1
    fi
    if [[ $(git rev-parse HEAD) != "$(cat "$STATE")" ]]; then
        echo "large_folders: HEAD moved since 'untrack': a commit made in between records ${FOLDERS[*]} as deleted;" \
            "undo it (git reset --soft $(cat "$STATE")), then run 'retrack' again" >&2
        exit 1
    fi
    git reset -q -- "${FOLDERS[@]}"
    for folder in "${FOLDERS[@]}"; do
        sed -i "\#^/$folder/\$#d" "$EXCLUDE"
    done
    rm "$STATE"
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
