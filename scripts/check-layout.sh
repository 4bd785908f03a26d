#!/usr/bin/env bash
# Fails when the layout table of ARCHITECTURE.md and `ls src` disagree: every entry of
# src/ (file, or directory written with a trailing /) must be named in the first
# column of a row as `src/NAME`, and every `src/NAME` named there must exist.
# Subpaths (`src/server/h1.rs`) may appear in the description column freely.
set -euo pipefail
cd "$(dirname "$0")/.."
doc=ARCHITECTURE.md

table=$(awk '/^## Layout/{on=1; next} on && /^## /{on=0} on' "$doc" |
    grep '^| `src/' | cut -d'|' -f2 |
    grep -o '`src/[^`/]*/\?`' | tr -d '`' | sed 's|^src/||' | sort -u)
tree=$(ls -p src | sort -u)

missing=$(comm -13 <(echo "$table") <(echo "$tree"))
stale=$(comm -23 <(echo "$table") <(echo "$tree"))
if [ -n "$missing$stale" ]; then
    [ -n "$missing" ] && printf 'in src/ but not in the layout table of %s:\n%s\n' "$doc" "$(sed 's/^/  src\//' <<<"$missing")" >&2
    [ -n "$stale" ] && printf 'in the layout table of %s but not in src/:\n%s\n' "$doc" "$(sed 's/^/  src\//' <<<"$stale")" >&2
    exit 1
fi
echo "check-layout: $doc names all $(wc -l <<<"$tree") entries of src/, and nothing else"
