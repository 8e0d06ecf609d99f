"""README.md and docs/results.md show the tables of the committed reports, verbatim."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrdskd.report_sections import filled, find_section, include_blocks, section

REPOSITORY = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPOSITORY / "README.md", REPOSITORY / "docs" / "results.md"]


def blocks():
    for document in DOCUMENTS:
        for block in include_blocks(document.read_text()):
            yield pytest.param(block, id=f"{document.name}:{block['path']}#{block['fragment']}")


def test_the_documents_include_report_sections():
    readme = list(include_blocks(DOCUMENTS[0].read_text()))
    assert len(readme) >= 4, "the README results summary includes the paired verdicts"
    assert all(block["fragment"].startswith("paired") for block in readme)


@pytest.mark.parametrize("block", list(blocks()))
def test_each_block_equals_its_report_section(block):
    report = REPOSITORY / block["path"]
    assert report.exists(), f"{block['path']} does not exist: regenerate the reports"
    expected = find_section(report.read_text(), block["fragment"], block["path"])
    assert block["body"] == expected, (
        f"The block of {block['path']}#{block['fragment']} differs from the report: run "
        "experiments/reports.sh (or scripts/update_readme_results.py)")


def test_filling_replaces_a_block_and_fragments_must_be_unique(tmp_path):
    report = tmp_path / "report.md"
    report.write_text("\n".join(["# r", *section("paired", "a", ["| x |"]), "",
                                 *section("paired", "b", ["| y |"]),
                                 *section("table", "a", ["| z |"])]) + "\n")
    document = ("intro\n<!-- report: report.md#table -->\nold, typed by hand\n"
                "<!-- /report -->\nend\n")
    assert filled(document, tmp_path) == (
        "intro\n<!-- report: report.md#table -->\n| z |\n<!-- /report -->\nend\n")
    assert find_section(report.read_text(), "paired/b") == "| y |\n"
    with pytest.raises(KeyError, match="several sections matching '#paired'"):
        find_section(report.read_text(), "paired")
    with pytest.raises(KeyError, match="no section matching '#cost'.*paired/a, paired/b"):
        find_section(report.read_text(), "cost")
