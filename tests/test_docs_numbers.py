"""Every number README.md and docs/*.md quote is covered: checked against a fresh run (or a
config, or the code) at the precision it is quoted with, quoted from a source's printed output,
or declared a measurement, an external figure, an example's input or part of a definition
(tests/docnumbers.py says how pages mark them)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from tests.docnumbers import (
    check,
    check_output,
    inventory,
    is_heavy,
    is_slow,
    marked_numbers,
    output_blocks,
    pages,
)

PAGES = pages()


def _by_source():
    numbers, blocks = defaultdict(list), defaultdict(list)
    for path in PAGES:
        for m in marked_numbers(path):
            numbers[m.source].append(m)
        for b in output_blocks(path):
            blocks[b.source].append(b)
    return numbers, blocks


NUMBERS, BLOCKS = _by_source()
SOURCES = sorted(set(NUMBERS) | set(BLOCKS))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_number_of_the_page_is_covered(page):
    missing = inventory(page)
    listed = "\n".join(f"  line {line}: {context}" for line, context in missing[:15])
    assert not missing, (
        f"{len(missing)} numbers of {page.name} have no source (mark them as tests/docnumbers.py "
        f"says):\n{listed}"
    )


def _marks(source: str) -> list:
    if is_heavy(source):
        return [pytest.mark.slow, pytest.mark.heavy]
    return [pytest.mark.slow] if is_slow(source) else []


@pytest.mark.parametrize("source", [pytest.param(s, marks=_marks(s)) for s in SOURCES])
def test_quoted_numbers_agree_with_a_fresh_run(source):
    problems = check(NUMBERS[source])
    for block in BLOCKS[source]:
        problems += [f"not printed any more: {p}" for p in check_output(block)]
    assert not problems, "\n".join(problems)
