"""The README and docs/ link only to files that exist (pages move; a dead link is a newcomer's dead end)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_relative_links_in_the_readme_and_docs_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    dead = [f"{page.relative_to(ROOT)} -> {target}"
            for page in pages for target in LINK.findall(page.read_text())
            if "://" not in target and not (page.parent / target).exists()]
    assert not dead, dead
