#!/usr/bin/env python3
"""Checks that every relative link and anchor in README.md, ARCHITECTURE.md,
benches/README.md and docs/*.md resolves; exits 1 listing the broken ones.

A link is `[text](target)` outside code; `http(s):` and `mailto:` targets are not
fetched. A target must name an existing file or directory; a `#fragment` must be a
heading of the file it points into (ids as mdBook and GitHub make them: lower case,
spaces to `-`, other punctuation dropped, `-1`, `-2`… for repeats). Links in docs/
must stay inside docs/: the book is built from that directory alone.

Usage: scripts/check-links.py [FILE...]   (default: the files above)
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text):
    """Lines outside fenced code, with inline code spans blanked out."""
    fence = None
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.lstrip()
        marker = stripped[:3]
        if marker in ("```", "~~~"):
            if fence is None:
                fence = marker
            elif fence == marker:
                fence = None
            continue
        if fence is None:
            yield number, re.sub(r"`[^`]*`", lambda m: " " * len(m.group(0)), line)


def slug(heading):
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "")
    out = []
    for ch in text:
        if ch.isalnum() or ch in "_-":
            out.append(ch.lower())
        elif ch.isspace():
            out.append("-")
    return "".join(out)


def anchors(path, cache={}):
    if path not in cache:
        ids, seen = set(), {}
        fence = None
        for line in path.read_text(encoding="utf-8").split("\n"):
            marker = line.lstrip()[:3]
            if marker in ("```", "~~~"):
                fence = marker if fence is None else (None if fence == marker else fence)
                continue
            m = HEADING.match(line) if fence is None else None
            if m:
                base = slug(m.group(2))
                n = seen.get(base, 0)
                seen[base] = n + 1
                ids.add(base if n == 0 else f"{base}-{n}")
        ids.update(re.findall(r'<a\s+(?:name|id)="([^"]+)"', path.read_text(encoding="utf-8")))
        cache[path] = ids
    return cache[path]


def check(path):
    errors = []
    text = path.read_text(encoding="utf-8")
    in_docs = DOCS in path.resolve().parents
    for number, line in prose_lines(text):
        for m in LINK.finditer(line):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue
            where = f"{path.relative_to(ROOT)}:{number}: {target}"
            file_part, _, fragment = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path.resolve()
            if not dest.exists():
                errors.append(f"{where}: no such file")
                continue
            if in_docs and DOCS != dest and DOCS not in dest.parents:
                errors.append(f"{where}: leaves docs/ (the book cannot serve it)")
                continue
            if fragment:
                if dest.is_dir() or dest.suffix != ".md":
                    errors.append(f"{where}: an anchor into a file that is not Markdown")
                elif fragment not in anchors(dest):
                    errors.append(f"{where}: no heading with id #{fragment} in {dest.relative_to(ROOT)}")
    return errors


def main(argv):
    files = [Path(a).resolve() for a in argv] or [
        ROOT / "README.md",
        ROOT / "ARCHITECTURE.md",
        ROOT / "benches" / "README.md",
        *sorted(DOCS.glob("*.md")),
    ]
    errors, count = [], 0
    for path in files:
        if path.exists():
            count += 1
            errors += check(path)
        else:
            errors.append(f"{path}: missing")
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"check-links: {len(errors)} broken link(s)", file=sys.stderr)
        return 1
    print(f"check-links: {count} files, every relative link and anchor resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
