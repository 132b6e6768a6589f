"""Documentation references point at something a clone contains.

Docstrings, comments, configs and the README cite the notes in ``docs/`` by file and numbered section.
These tests read every text file of the package, the tests, the docs and the README, and fail when a cited
``.md`` file is missing, when a cited section number is not a heading of that file, or when anything
points outside the repository at the design notes this project was started from.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".md", ".txt", ".toml", ".cfg", ".ini", ".json", ".jsonl"}
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}

# A file name ending in .md, optionally with a path, then any number of section marks: "<name>.md §3, §4.1".
REFERENCE = re.compile(
    r"(?<![\w./-])(?P<file>(?:[\w.-]+/)*[\w-]*\w\.md)\b(?P<sections>(?:[ \t]*,?[ \t]*§[ \t]*\d+(?:\.\d+)*)*)"
)
SECTION = re.compile(r"§[ \t]*(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{1,6}[ \t]+(\d+(?:\.\d+)*)\.?[ \t]", re.MULTILINE)
UPPERCASE_NOTE = re.compile(r"^[A-Z][A-Z0-9_-]*\.md$")  # note names in capitals, as the old notes had
MARKDOWN_LINK = re.compile(r"\]\((?P<target>[^)\s#]+\.md)(?:#[^)\s]*)?\)")
# Spelled so that this file does not match itself.
OUTSIDE = re.compile(r"(?:\.\./|/work/)" + "shared" + r"\b")


def _text_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for top in ("src", "tests", "docs"):
        for path in sorted((ROOT / top).rglob("*")):
            rel = path.relative_to(ROOT)
            if not path.is_file() or path.suffix not in TEXT_SUFFIXES:
                continue
            if SKIP_PARTS.intersection(rel.parts) or any(p.endswith(".egg-info") for p in rel.parts):
                continue
            files.append(path)
    return files


FILES = _text_files()


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _resolve(name: str, citing: Path) -> Path | None:
    """A cited file, relative to the repository root or to the citing file's folder."""
    for base in (ROOT, citing.parent):
        candidate = (base / name).resolve()
        if candidate.is_file() and ROOT in candidate.parents:
            return candidate
    return None


def _sections(path: Path) -> set[str]:
    return set(HEADING.findall(_read(path)))


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _problems(path: Path) -> list[str]:
    text, rel = _read(path), path.relative_to(ROOT)
    problems = []
    for m in REFERENCE.finditer(text):
        name, sections = m.group("file"), SECTION.findall(m.group("sections"))
        checked = bool(sections) or name.startswith("docs/") or bool(UPPERCASE_NOTE.match(Path(name).name))
        if not checked:
            continue  # e.g. eval.md, report.md: output files a run writes, not documentation
        where = f"{rel}:{_line(text, m.start())}: {m.group(0).strip()!r}"
        target = _resolve(name, path)
        if target is None:
            problems.append(f"{where}: {name} is not in the repository")
            continue
        missing = [s for s in sections if s not in _sections(target)]
        if missing:
            have = ", ".join(sorted(_sections(target), key=lambda s: [int(p) for p in s.split(".")]))
            problems.append(f"{where}: no section {', '.join('§' + s for s in missing)} in {name} (has: {have})")
    if path.suffix == ".md":
        for m in MARKDOWN_LINK.finditer(text):
            target = m.group("target")
            if "://" not in target and _resolve(target, path) is None:
                problems.append(f"{rel}:{_line(text, m.start())}: link to {target}, which is not in the repository")
    return problems


def test_the_docs_exist_with_numbered_sections() -> None:
    for name in ("design", "method", "findings"):
        path = ROOT / "docs" / f"{name}.md"
        assert path.is_file(), f"docs/{name}.md is missing"
        assert {"1", "2", "3"} <= _sections(path), f"docs/{name}.md lacks numbered sections 1-3"


def test_the_reference_pattern_sees_what_it_must() -> None:
    """The checker itself: it must catch a missing file and a missing section, and leave output names alone."""
    sample = "see NOTES" + ".md §2, §4.9. and eval" + ".md; docs/x" + ".md"  # split: this file is scanned too
    found = [m.group("file", "sections") for m in REFERENCE.finditer(sample)]
    assert found == [("NOTES" + ".md", " §2, §4.9"), ("eval" + ".md", ""), ("docs/x" + ".md", "")]
    assert HEADING.findall("## 4. Title\n### 4.9 Sub\n#### 10.2. Deep\n## No number\n") == ["4", "4.9", "10.2"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_references_resolve_inside_the_repository(path: Path) -> None:
    problems = _problems(path)
    assert not problems, "stale documentation references:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_points_outside_the_repository(path: Path) -> None:
    text = _read(path)
    hits = [f"{path.relative_to(ROOT)}:{_line(text, m.start())}" for m in OUTSIDE.finditer(text)]
    assert not hits, "the repository must stand alone; these cite notes outside it: " + ", ".join(hits)
