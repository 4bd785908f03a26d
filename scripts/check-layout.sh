#!/usr/bin/env bash
# Fails when the layout table of ARCHITECTURE.md and the tree disagree: every entry of
# src/ and of each layer directory (src/data_plane/, src/control_plane/, src/tools/)
# (file, or directory written with a trailing /) must be named in the first column of
# a row as `src/NAME` or `src/LAYER/NAME`, and every such path named there must exist.
# Deeper paths (`src/data_plane/server/conn.rs`) may appear in the description column
# freely.
set -euo pipefail
cd "$(dirname "$0")/.."
doc=ARCHITECTURE.md
layers="data_plane control_plane tools"

# The entries of src/ and of the layer directories, as src/NAME and src/LAYER/NAME.
tree=$({
    ls -p src | sed 's|^|src/|'
    for layer in $layers; do
        [ -d "src/$layer" ] || { echo "no layer directory src/$layer" >&2; exit 1; }
        ls -p "src/$layer" | sed "s|^|src/$layer/|"
    done
} | sort -u)

# The paths named in the table's first column, one or two levels below src/.
layer_alt=$(tr ' ' '|' <<<"$layers")
table=$(awk '/^## Layout/{on=1; next} on && /^## /{on=0} on' "$doc" |
    grep '^| `src/' | cut -d'|' -f2 |
    grep -oE "\`src/(($layer_alt)/)?[^\`/]*/?\`" | tr -d '`' | sort -u)

missing=$(comm -13 <(echo "$table") <(echo "$tree"))
stale=$(comm -23 <(echo "$table") <(echo "$tree"))
if [ -n "$missing$stale" ]; then
    [ -n "$missing" ] && printf 'in the tree but not in the layout table of %s:\n%s\n' "$doc" "$(sed 's/^/  /' <<<"$missing")" >&2
    [ -n "$stale" ] && printf 'in the layout table of %s but not in the tree:\n%s\n' "$doc" "$(sed 's/^/  /' <<<"$stale")" >&2
    exit 1
fi
echo "check-layout: $doc names all $(wc -l <<<"$tree") entries of src/ and its layers ($layers), and nothing else"
