"""The run folder's size and its contagion graph formats (``[output] graph``)."""

from __future__ import annotations

import gzip

import networkx as nx
import pytest

from model import ContagionModel
from model.config import ConfigError, build_config
from model.results import GRAPH_FILES, RUN_FILES, read_contagion_graph, run_status
from tests.helpers import small_config


def _folder_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_default_run_folder_is_at_most_a_third_of_plain_graphml_and_json(tmp_path):
    # A run with a big contagion graph (tens of thousands of edges), written as run folders
    # were before (plain GraphML and node-link JSON) and as they are by default: the graph
    # dominates both, as in the baseline (137 MB of which 135 MB graph files).
    base = small_config(steps=30, traders={"count": 1000, "leverage": 25.0})
    before = build_config({**base, "output": {"graph": ["graphml", "json"]}})
    now = build_config(base)
    old = ContagionModel(before, create_agents=False).run().write_results(tmp_path / "old")
    new = ContagionModel(now, create_agents=False).run().write_results(tmp_path / "new")
    edges = nx.read_graphml(new / "contagion.graphml.gz").number_of_edges()
    assert edges > 20_000
    assert _folder_bytes(new) <= _folder_bytes(old) / 3
    plain = (old / "contagion.graphml").read_bytes()
    compressed = (new / "contagion.graphml.gz").stat().st_size
    assert compressed <= len(plain) / 5
    # the same graph, compressed: the bytes of the plain file
    assert gzip.decompress((new / "contagion.graphml.gz").read_bytes()) == plain


def test_output_graph_formats_are_validated():
    base = small_config(steps=2, shocks=[{"step": 2, "asset": "BTC", "return": -0.08}])
    with pytest.raises(ConfigError, match=r"output\.graph\[0\]: .*'graphml\.gz'"):
        build_config({**base, "output": {"graph": ["graphml.gzip"]}})
    with pytest.raises(ConfigError, match=r"output\.graph: 'json' is listed twice"):
        build_config({**base, "output": {"graph": ["json", "graphml", "json"]}})
    with pytest.raises(ConfigError, match=r"output\.graph"):
        build_config({**base, "output": {"graph": []}})
    with pytest.raises(ConfigError, match=r"output\.grpah: unknown key"):
        build_config({**base, "output": {"grpah": ["json"]}})
    assert build_config(base).output.graph == ["graphml.gz"]


def test_run_status_needs_the_tables_and_one_graph_file(tmp_path):
    cfg = build_config(
        small_config(
            steps=3,
            traders={"count": 40},
            output={"graph": ["json"]},
            shocks=[{"step": 2, "asset": "BTC", "return": -0.08}],
        )
    )
    out = ContagionModel(cfg, create_agents=False).run().write_results(tmp_path / "run")
    assert run_status(out) == "complete"
    assert nx.utils.graphs_equal(
        read_contagion_graph(out), ContagionModel(cfg).run().contagion_graph
    )
    (out / GRAPH_FILES["json"]).unlink()
    assert run_status(out) == "incomplete"
    with pytest.raises(FileNotFoundError, match="no contagion graph file"):
        read_contagion_graph(out)
    assert "contagion_edges.parquet" in RUN_FILES


def test_igraph_reads_the_compressed_graph_file(tmp_path):
    igraph = pytest.importorskip("igraph")
    cfg = build_config(small_config(steps=12, traders={"count": 300}))
    m = ContagionModel(cfg, create_agents=False).run()
    out = m.write_results(tmp_path / "run")
    g = m.contagion_graph
    # Graph.Read picks the gzip-compressed GraphML reader from the name; Read_GraphMLz by name
    for read in (igraph.Graph.Read, igraph.Graph.Read_GraphMLz):
        h = read(str(out / "contagion.graphml.gz"))
        assert h.is_directed()
        assert (h.vcount(), h.ecount()) == (g.number_of_nodes(), g.number_of_edges()) != (0, 0)
        names = h.vs["id"]
        weights = {(names[e.source], names[e.target]): e["weight"] for e in h.es}
        assert weights == {(str(u), str(v)): d["weight"] for u, v, d in g.edges(data=True)}
