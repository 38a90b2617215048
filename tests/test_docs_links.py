"""README.md and docs/*.md: relative links resolve, the README stays short and
keeps the test command that `.ci/run` extracts. Plain text checks: no backend."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 250
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_INLINE_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # https:, mailto:, ...


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
    """Targets of inline and reference-style markdown links outside code."""
    prose = _prose(text)
    return _INLINE_LINK.findall(prose) + _REFERENCE_LINK.findall(prose)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link keeps its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file (repeated headings get -1, -2, ...)."""
    seen: dict[str, int] = {}
    result = set()
    for line in _FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def test_link_helpers_find_and_skip_what_they_should():
    text = "See [a](docs/a.md#x), ![img](fig.png) and [web](https://x.org).\n`[no](code.md)`\n" \
           "```python\nx = [1](2)\n```\n[ref]: docs/b.md\n"
    assert links(text) == ["docs/a.md#x", "fig.png", "https://x.org", "docs/b.md"]
    assert slug("Process tuning on first use (`keras_sl.fast.runtime`)") == \
        "process-tuning-on-first-use-keras_slfastruntime"
    assert slug("Table II, reproduced (`keras-sl profile`, 512×512)") == "table-ii-reproduced-keras-sl-profile-512512"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    broken = []
    for target in links(doc.read_text(encoding="utf-8")):
        if _EXTERNAL.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        path = (doc.parent / path_part).resolve() if path_part else doc
        if not path.exists():
            broken.append(f"{target} (no such file: {path})")
        elif fragment and path.suffix == ".md" and fragment not in anchors(path):
            broken.append(f"{target} (no heading #{fragment} in {path.name})")
    assert not broken, f"{doc.relative_to(ROOT)} has broken links: " + "; ".join(broken)


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; keep it <= {MAX_README_LINES}"


def test_readme_keeps_the_ci_test_command():
    """Exactly one `<!-- test-command` marker, directly followed by a ```bash
    block holding one command line (what `.ci/run` extracts with awk)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    markers = [i for i, line in enumerate(lines) if "<!-- test-command" in line]
    assert len(markers) == 1, f"expected one '<!-- test-command' marker in README.md, found {len(markers)}"
    i = markers[0]
    assert lines[i + 1:i + 2] == ["```bash"], "the marker must be followed directly by a ```bash line"
    command, closing = lines[i + 2:i + 4]
    assert command.strip() and not command.startswith("```"), "the ```bash block has no command"
    assert closing == "```", "the test command block must hold exactly one line"
    assert "tests/run_backends.py" in command
