"""Named sections of ``report.md``, so other documents can include them verbatim.

The report writes each part of a table between markers::

    <!-- section: paired/mnist-dirichlet-alpha0.1 -->
    ...
    <!-- /section -->

(kinds: ``paired``, ``paired-details``, ``table``, ``cost``, ``distillation-gain``).
A document includes one with a block whose first line names the report and the
section, ``<!-- report: results/.../report/report.md#paired -->``, and whose last line
is ``<!-- /report -->``; ``scripts/update_readme_results.py`` fills such blocks and
``tests/test_readme_results.py`` checks that they match. A fragment may name the kind
only (``#paired``) when the report has one section of that kind.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

SECTION_START = "<!-- section: {name} -->"
SECTION_END = "<!-- /section -->"
BLOCK_END = "<!-- /report -->"
_SECTION = re.compile(r"^<!-- section: (?P<name>\S+) -->\n(?P<body>.*?)^<!-- /section -->$",
                      re.MULTILINE | re.DOTALL)
_BLOCK = re.compile(r"^<!-- report: (?P<path>[^#\s]+)#(?P<fragment>\S+) -->\n"
                    r"(?P<body>.*?)^<!-- /report -->$", re.MULTILINE | re.DOTALL)


def section(kind: str, table_id: str, lines: Sequence[str]) -> list[str]:
    """``lines`` between the markers of section ``<kind>/<table_id>``."""
    return [SECTION_START.format(name=f"{kind}/{table_id}"), *lines, SECTION_END]


def sections(markdown: str) -> dict[str, str]:
    """Section name -> its text (the lines between the markers, ending with a newline)."""
    return {match["name"]: match["body"] for match in _SECTION.finditer(markdown)}


def find_section(markdown: str, fragment: str, source: str = "report.md") -> str:
    """The text of section ``fragment`` (``kind/table-id``, or ``kind`` if unique).

    Raises
    ------
    KeyError
        If no section, or several, match: the message lists the sections there are.
    """
    found = sections(markdown)
    if fragment in found:
        return found[fragment]
    matching = [name for name in found if name.split("/", 1)[0] == fragment]
    if len(matching) == 1:
        return found[matching[0]]
    what = "several sections" if matching else "no section"
    raise KeyError(f"{source} has {what} matching '#{fragment}'; its sections: "
                   f"{', '.join(found) or 'none (regenerate it with fedrdskd-report)'}")


def include_blocks(document: str) -> Iterator[re.Match[str]]:
    """The ``<!-- report: PATH#FRAGMENT -->`` ... ``<!-- /report -->`` blocks."""
    return _BLOCK.finditer(document)


def filled(document: str, root: Path) -> str:
    """``document`` with every include block's body replaced by the section it names.

    ``PATH`` is relative to ``root`` (the repository).
    """
    def body(match: re.Match[str]) -> str:
        report = root / match["path"]
        text = find_section(report.read_text(), match["fragment"], str(match["path"]))
        return (f"<!-- report: {match['path']}#{match['fragment']} -->\n{text}"
                f"{BLOCK_END}")

    return _BLOCK.sub(body, document)
