"""The documentation stays true to the repository: the configuration reference matches the
schema, links and paths point at files that exist, the README stays short and names the test
command CI runs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 260

# a markdown link or image: [text](target "title"); a target with a scheme is not a file
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
# what a path in backticks looks like: no spaces, placeholders, globs, URLs or options
PATH_LIKE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.\-/]*$")
BARE_FILES = {"LICENSE", "Makefile"}
FILE_SUFFIXES = {
    ".py",
    ".md",
    ".yaml",
    ".yml",
    ".toml",
    ".txt",
    ".json",
    ".jsonl",
    ".gz",
    ".csv",
    ".png",
    ".cff",
    ".cfg",
    ".sh",
}


def _load_config_reference():
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "scripts" / "config_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _documents() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "RESULTS.md"]


def _anchors(document: Path) -> set[str]:
    """The anchors GitHub gives a markdown file's headings: lowercase, punctuation dropped,
    spaces as dashes, a repeated one numbered."""
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", document.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def _is_repo_path(token: str) -> bool:
    """`iro/core/methods.py`, `docs/`, `configs/demo.yaml`: a path into the repository, not a
    config key (`value.prior`), a module (`iro.core.stats`), a command or a placeholder."""
    if not PATH_LIKE.match(token) or token.startswith((".iro", ".venv", "..")):
        return False
    if token in BARE_FILES:
        return True
    if "/" in token:
        return True
    return Path(token).suffix in FILE_SUFFIXES


def test_the_config_reference_matches_the_schema():
    expected = _load_config_reference().render()
    written = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert written == expected, (
        "docs/config.md is out of date with iro/core/config/: run "
        ".venv/bin/python scripts/config_reference.py and commit the result"
    )


def test_the_readme_is_at_most_260_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, more than {README_MAX_LINES}: move the details to docs/"
    )


def test_every_relative_link_in_the_readme_and_docs_points_to_a_file():
    dead = []
    for document in _documents():
        for target in LINK.findall(_prose(document.read_text(encoding="utf-8"))):
            if EXTERNAL.match(target):
                continue
            path, _, anchor = target.partition("#")
            linked = (document.parent / path) if path else document
            if not linked.exists():
                dead.append(f"{document.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                dead.append(f"{document.relative_to(ROOT)}: {target} (no such heading)")
    assert not dead, "links that lead nowhere:\n" + "\n".join(dead)


def test_every_repository_path_the_readme_names_exists():
    text = FENCE.sub("", README.read_text(encoding="utf-8"))
    named = {token.split(":", 1)[0] for token in CODE_SPAN.findall(text)}
    missing = sorted(t for t in named if _is_repo_path(t) and not (ROOT / t).exists())
    assert not missing, "README.md names paths that do not exist: " + ", ".join(missing)


def test_the_readme_gives_the_test_command_that_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, re.MULTILINE), ".ci/run no longer runs `make test`"
    readme = README.read_text(encoding="utf-8")
    assert re.search(r"^\s*make test(\s+#.*)?$", readme, re.MULTILINE), (
        "README.md must give CI's test command, `make test`, on a line of its own"
    )
