"""The reference: every config key and every output column, printed from their declarations.

``contagion config [KEY|SECTION]`` prints the config keys (type, default, allowed range, unit,
meaning, and the named choices of a key that has them) from the same fields the validator
checks (:func:`model.config.describe`, the trading rules' ``Params`` included). The Markdown
pages docs/configuration.md and docs/outputs.md are rendered here from those fields and from
:mod:`model.schema`; the tests compare the files with what this module renders, and

    python -m experiments.reference

rewrites both (in a source checkout).
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any

from model import schema
from model.config import ConfigError, describe, describe_sections, did_you_mean

__all__ = [
    "DOCS",
    "config_markdown",
    "config_reference",
    "find_keys",
    "main",
    "outputs_markdown",
    "print_config_reference",
]

# The generated pages, relative to the repository's root.
DOCS = {"configuration.md": "config_markdown", "outputs.md": "outputs_markdown"}
REGENERATE = "python -m experiments.reference"
# Packages whose trading rules the generated page lists (rules registered by a user's own
# module, or by a test, are printed by `contagion config` but not written into the docs).
_OWN_PACKAGES = ("agents.", "model.", "experiments.")


# --------------------------------------------------------------------------------------------
# Finding keys
# --------------------------------------------------------------------------------------------


def _plain(key: str) -> str:
    """A key without list markers: ``assets[].depth`` -> ``assets.depth``."""
    return key.replace("[]", "")


def find_keys(query: str | None, rows=None, sections=None) -> tuple[list[dict], list[dict]]:
    """The sections and key rows a query names.

    A query is a key (``margin.fee``, ``assets.depth``, ``assets.BTC.depth``,
    ``shocks.0.return``, ``assets[].depth``), a section (``margin``, ``traders.rules``,
    ``traders.rules.momentum``, ``[[assets]]``) or nothing (everything).

    Returns:
        ``(sections, rows)``: the :func:`model.config.describe_sections` rows involved and the
        :func:`model.config.describe` rows named.

    Raises:
        ConfigError: nothing is named (one line with the closest key or section).
    """
    rows = describe() if rows is None else rows
    sections = describe_sections() if sections is None else sections
    if not query:
        return sections, rows
    q = _plain(query.strip().strip("[]"))
    found = _matching(q, rows, sections)
    if not found[1]:
        found = _matching(_without_entry(q, rows), rows, sections)
    if not found[1]:
        names = sorted({_plain(r["key"]) for r in rows} | {_plain(s["section"]) for s in sections})
        raise ConfigError(f"{query}: unknown key or section{did_you_mean(q, names)}")
    return found


def _matching(q: str, rows, sections) -> tuple[list[dict], list[dict]]:
    """Rows whose key is ``q`` or lies under it, and the sections they sit in."""
    hit = [r for r in rows if _plain(r["key"]) == q or _plain(r["key"]).startswith(q + ".")]
    involved = {r["section"] for r in hit}
    return [s for s in sections if s["section"] in involved], hit


def _without_entry(q: str, rows) -> str:
    """``assets.BTC.depth`` -> ``assets.depth``: drop a list entry's index or symbol."""
    parts = q.split(".")
    lists = {_plain(r["key"]) for r in rows if r["type"].startswith("a list")}
    for i in range(1, len(parts) - 1):
        if ".".join(parts[:i]) in lists:
            return ".".join(parts[:i] + parts[i + 1 :])
    return q


# --------------------------------------------------------------------------------------------
# Formatting one key
# --------------------------------------------------------------------------------------------


def _value(v: Any) -> str:
    """A value as TOML writes it (defaults in the reference)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, float):
        return _short(f"{v:.10g}") if math.isfinite(v) else str(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }" if v else "{}"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return str(v)


def _short(text: str) -> str:
    """``1e+06`` -> ``1e6``, ``1e-06`` -> ``1e-6``."""
    return re.sub(r"e([+-]?)0*(\d)", lambda m: "e" + m.group(1).replace("+", "") + m.group(2), text)


def _default(row: dict) -> str:
    if row["required"]:
        return "required"
    if row["default"] is None:
        return "unset"
    return _value(row["default"])


_WORDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _range(row: dict) -> str:
    checks = row["checks"]
    parts = [f"{w} {_number(checks[k])}" for k, w in _WORDS.items() if k in checks]
    if "min_len" in checks:
        parts.append("not empty" if checks["min_len"] == 1 else f"at least {checks['min_len']}")
    return " and ".join(parts)


def _number(x) -> str:
    if isinstance(x, int) and abs(x) >= 10**15:
        return f"2^{x.bit_length()} - 1" if (x + 1) & x == 0 else str(x)
    return f"{x:,}" if isinstance(x, int) else _short(f"{x:g}")


def _key_block(row: dict) -> list[str]:
    lines = [row["key"], f"  {row['doc']}" if row["doc"] else ""]
    fields = [
        ("type", row["type"]),
        ("default", _default(row)),
        ("range", _range(row)),
        ("unit", row["unit"]),
    ]
    lines += [f"  {name:<8} {text}" for name, text in fields if text]
    if row["choices"]:
        width = max(len(c) for c in row["choices"])
        for i, (name, doc) in enumerate(row["choices"].items()):
            label = "choices" if i == 0 else ""
            lines.append(f"  {label:<8} {name:<{width}}  {doc}")
    return [line for line in lines if line]


def _section_title(section: dict) -> str:
    head = section["table"] or "top level"
    return f"{head}  {_plain_doc(section['doc'])}" if section["doc"] else head


def _plain_doc(text: str) -> str:
    return text.replace("``", "`")


# --------------------------------------------------------------------------------------------
# The text reference
# --------------------------------------------------------------------------------------------


def config_reference(query: str | None = None) -> str:
    """The reference of ``query`` (a key, a section, or everything) as text."""
    sections, rows = find_keys(query)
    if len(rows) == 1 and query and _plain(rows[0]["key"]) != _plain(rows[0]["section"]):
        return "\n".join(_key_block(rows[0])) + "\n"
    out = []
    for section in sections:
        members = [r for r in rows if r["section"] == section["section"]]
        out.append(_section_title(section))
        out.append("")
        for row in members:
            out += _key_block(row)
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def print_config_reference(query: str | None = None, *, markdown: bool = False) -> int:
    """``contagion config [KEY|SECTION] [--markdown]``: print the reference; returns 0.

    Raises:
        ConfigError: the query names no key or section.
    """
    if markdown:
        if query:
            raise ConfigError("--markdown: prints the whole reference; leave out KEY|SECTION")
        sys.stdout.write(config_markdown())
    else:
        sys.stdout.write(config_reference(query))
    return 0


# --------------------------------------------------------------------------------------------
# Markdown pages
# --------------------------------------------------------------------------------------------

_CONFIG_INTRO = f"""\
# Configuration reference

<!-- Generated from model/config.py and the trading rules' parameter classes by
`{REGENERATE}`: edit the declarations, not this file (tests/test_reference.py fails when the
two differ). -->

A run is one TOML file. Every key below is declared once, with its type, default, allowed range,
unit and meaning, in `model/config.py` (trading-rule parameters beside their rule, in
`agents/strategies.py`); the validator checks a config against these declarations, and
`contagion config [KEY|SECTION]` prints them (`contagion config margin`,
`contagion config margin.fee`). This page is generated from them.

Keys are addressed by dotted names, in `--set KEY=VALUE`, in sweeps and in
`load_config(path, overrides={{...}})`: `market.volatility`, `margin.mode`,
`traders.rules.momentum.lookback`. Items of a list of tables (`[[assets]]`, `[[shocks]]`,
`[[margin.tiers]]`) are addressed by index or, for assets, by symbol: `assets.BTC.depth`,
`assets.0.price`, `shocks.0.return`; below they are written `assets[].depth`.

Units:

* *fraction*: a share written as a number, 0.01 for 1% (rates, fees, returns, weights);
* *quote currency*: amounts of money (collateral, notional, the insurance fund); prices are
  quote currency per unit of the asset, quantities are units of the asset;
* *annualised, fraction per sqrt(year)*: volatilities are annual, whatever the step length: a
  step of `market.step_minutes` minutes has a standard deviation of
  `volatility x sqrt(step_minutes / 525,600)` in log price;
* *depth* (`assets[].depth`) is a quote notional, at the asset's initial price, whose sale
  moves the price 1%; the market works with the quantity `depth / price`, the units whose sale
  moves it 1% (docs/design.md, the impact law);
* *x*: a leverage, notional over the money behind it (margin, collateral or equity);
* *steps*, *minutes*, *rounds*, *accounts*: counts of those.
"""


def _cell(text: str) -> str:
    return _plain_doc(str(text)).replace("|", "\\|").replace("\n", " ")


def _markdown_row(row: dict) -> str:
    meaning = row["doc"]
    if row["choices"]:
        meaning += "; " + "; ".join(f"`{n}`: {d}" for n, d in row["choices"].items())
    cells = [
        f"`{row['key']}`",
        row["type"],
        f"`{_default(row)}`"
        if not row["required"] and row["default"] is not None
        else _default(row),
        _range(row),
        row["unit"],
        meaning,
    ]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _own_rule(section: str) -> bool:
    """Whether a ``traders.rules.<name>`` section belongs to a rule of this package."""
    from agents.strategies import STRATEGIES

    name = section.split(".", 2)[2]
    rule = STRATEGIES.get(name.strip('"'))
    return rule is not None and rule.__module__.startswith(_OWN_PACKAGES)


def config_markdown() -> str:
    """docs/configuration.md: every section and key of the config, as Markdown tables."""
    rows = describe()
    out = [_CONFIG_INTRO]
    for section in describe_sections():
        name = section["section"]
        if name.startswith("traders.rules.") and not _own_rule(name):
            continue
        members = [r for r in rows if r["section"] == name]
        out.append(f"## {section['table'] or 'Top level'}\n")
        if section["doc"]:
            out.append(_plain_doc(section["doc"]) + "\n")
        if not members:
            out.append("No keys.\n")
            continue
        out.append("| key | type | default | allowed | unit | meaning |")
        out.append("| --- | --- | --- | --- | --- | --- |")
        out += [_markdown_row(r) for r in members]
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


_OUTPUTS_INTRO = f"""\
# Outputs: every file, every column

<!-- Generated from model/schema.py by `{REGENERATE}`: edit the declarations, not this file
(tests/test_reference.py fails when the two differ, and tests/test_schema.py when a table a run
or a sweep writes differs from its declaration). -->

What a run folder (`contagion run`, `ContagionModel.write_results`) and a sweep folder
(`contagion sweep`) hold, column by column, with units and sign conventions. The columns are
declared once, in `model/schema.py`; this page is generated from the declarations, and the test
suite checks every table a run and a sweep write against them.

Conventions:

* Steps count from 1; a step's liquidation rounds count from 1 and are the cascade's
  generations. `first_liquidation_step = 0` means never liquidated.
* Quantities are units of the asset; positions are signed, long positive. Flows through the
  book (`flow`, `forced_flow`) are signed the other way round: **sells positive**, buys
  negative. A closed quantity (`liquidations.parquet` `quantity`) is signed as the position
  was: positive closes a long, which is a sale.
* Money is in the quote currency; prices are quote currency per unit of the asset.
* `impact` is a log-price offset (dimensionless): price = fundamental x exp(impact), negative
  after net selling.
* Fractions are numbers (0.12 for 12%).
* A *fill* is one position closed (wholly or in part) in one round; an *account* liquidated in
  several rounds is one account and several liquidations (rounds) and perhaps several fills.
* `{{asset}}` in a column name stands for one column per asset symbol, in the config's order
  (`quantity_BTC`, `quantity_ETH`); `{{key}}` for one column per swept dotted key; `{{name}}`
  for any name. Nested JSON keys are dotted; `[]` marks the items of a list of objects.

The run folder also holds `config.toml` (the resolved config, enough to rerun it; keys in
docs/configuration.md), the contagion graph below (`contagion.graphml.gz` by default;
`[output] graph` adds plain `contagion.graphml` and `contagion.json`, node-link JSON:
`networkx.node_link_graph(json.load(f))`), and, from `contagion run`, `cascade.png` (the largest
cascade drawn by round). `contagion plot DIR` adds `figures/`.
"""


def _table_markdown(table: schema.Table) -> list[str]:
    out = [f"### `{table.file}`\n", f"{table.rows[0].upper()}{table.rows[1:]}.\n"]
    what = "key" if table.file.endswith(".json") else "column"
    what = "attribute" if "graphml" in table.file else what
    out.append(f"| {what} | type | unit | meaning |")
    out.append("| --- | --- | --- | --- |")
    for c in table.columns:
        doc = f"{c.doc} ({c.when})" if c.when else c.doc
        out.append(
            "| " + " | ".join(_cell(x) for x in (f"`{c.name}`", c.dtype, c.unit, doc)) + " |"
        )
    out.append("")
    return out


def outputs_markdown() -> str:
    """docs/outputs.md: every file of a run folder and a sweep folder, column by column."""
    out = [_OUTPUTS_INTRO, "## Run folder\n"]
    for table in (schema.MARKET, schema.STEPS, schema.LIQUIDATIONS, schema.ACCOUNTS):
        out += _table_markdown(table)
    out += _table_markdown(schema.SUMMARY)
    out.append(
        "### The contagion graph (`contagion.graphml.gz`, `contagion.graphml`, `contagion.json`, "
        "`contagion_edges.parquet`)\n"
    )
    out.append(
        "Who liquidated whom (docs/contagion.md): the merged graph in GraphML and node-link "
        "JSON, with these attributes, and its edge events one row per attribution.\n"
    )
    for table in (
        schema.NODE_ATTRIBUTES,
        schema.EDGE_ATTRIBUTES,
        schema.GRAPH_ATTRIBUTES,
        schema.CONTAGION_EDGES,
    ):
        out += _table_markdown(table)
    out += _table_markdown(schema.ACCOUNT_HISTORY)
    out.append("## Sweep folder\n")
    out.append(
        "`sweep.json`, `runs/` (one JSON record per finished run), `runs.parquet` and "
        "`cascades.parquet` (rebuilt from `runs/`), and `figures/` after `contagion plot`.\n"
    )
    for table in (schema.RUNS, schema.CASCADES, schema.SWEEP):
        out += _table_markdown(table)
    return "\n".join(out).rstrip("\n") + "\n"


# --------------------------------------------------------------------------------------------
# Writing the pages
# --------------------------------------------------------------------------------------------


def main(root: str | Path | None = None) -> int:
    """Rewrite docs/configuration.md and docs/outputs.md under ``root`` (default: this
    checkout) from the declarations; print the files written."""
    docs = Path(root or Path(__file__).resolve().parent.parent) / "docs"
    for name, render in DOCS.items():
        path = docs / name
        path.write_text(globals()[render](), encoding="utf-8")
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
