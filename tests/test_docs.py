"""The docs' relative links resolve: a page moved or renamed must not leave a reader at a dead link.

Only links inside the repository are checked (no network); anchors are not.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# [text](target) or [text](target#anchor); a target with a scheme (https:, mailto:) is external.
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def doc_pages() -> list[Path]:
    return sorted([ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("deploy/**/*.md")])


def dead_links(page: Path) -> list[str]:
    targets = (m.group(1) for m in _LINK.finditer(page.read_text(encoding="utf-8")))
    return [t for t in targets if not _EXTERNAL.match(t) and not (page.parent / t).exists()]


def test_every_relative_link_in_the_docs_resolves() -> None:
    pages = doc_pages()
    assert len(pages) > 5, pages  # the glob found the docs, so an empty result below means something
    dead = {str(p.relative_to(ROOT)): links for p in pages if (links := dead_links(p))}
    assert not dead, f"dead links: {dead}"


def test_a_dead_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("x")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [anchor](there.md#a) [web](https://example.org/x) [gone](missing.md#b)")
    assert dead_links(page) == ["missing.md"]
