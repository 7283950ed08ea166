"""How long the contagion graph takes in a step with ~100,000 liquidations.

Run by hand: ``.venv/bin/python -m benchmarks.contagion_step [--traders N] [--shock R]``.
A one-step run of ``N`` generated accounts (two assets, cross margin, partial liquidation)
with a fundamental shock at step 1; the recorder's ``record`` is timed per round, then the
networkx graph build and the GraphML / node-link writers. The floor printed next to the
recording time is one numpy pass over the arrays the recorder reads.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.bench import cpu_min
from model import ContagionModel
from model.config import build_config


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traders", type=int, default=150_000)
    ap.add_argument("--shock", type=float, default=-0.12)
    ap.add_argument("--max-edges", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    cfg = build_config(
        {
            "name": "contagion-step-benchmark",
            "seed": 3,
            "steps": 1,
            "market": {"volatility": 0.6, "correlation": 0.7, "impact_exponent": 0.5},
            "assets": [
                {"symbol": "BTC", "price": 60000.0, "depth": 2.0e7, "max_leverage": 100},
                {"symbol": "ETH", "price": 3000.0, "depth": 8.0e6, "max_leverage": 50},
            ],
            "traders": {"count": args.traders, "leverage": 20.0, "assets_per_trader": 2},
            "margin": {"mode": "cross", "liquidation": "partial", "insurance_fund": 1.0e7},
            "shocks": [{"step": 1, "asset": "BTC", "return": args.shock}],
            "contagion": {"max_edges": args.max_edges},
        }
    )
    model = ContagionModel(cfg, create_agents=False)
    rec = model.recorder
    timings = []
    cpu = []
    record = rec.record

    def timed(r):
        t, c = time.perf_counter(), time.process_time()
        record(r)
        timings.append((r.round, r.rows.size, time.perf_counter() - t))
        cpu.append(time.process_time() - c)

    rounds = []
    model.engine.on_round = lambda r: (rounds.append(r), timed(r))
    t0, c0 = time.perf_counter(), time.process_time()
    model.step()
    step_time, step_cpu = time.perf_counter() - t0, time.process_time() - c0
    liquidations = sum(k for _, k, _ in timings)
    fills = model.last.liquidations
    record_time = sum(t for _, _, t in timings)
    print(
        f"step: {liquidations} liquidations ({fills} fills) in {len(timings)} rounds, "
        f"{step_time:.2f} s wall, {step_cpu:.2f} s CPU = {step_cpu * 1e6 / max(fills, 1):.2f} "
        "us CPU per fill"
    )
    for rnd, k, t in timings:
        print(f"  round {rnd:3d}: {k:7d} liquidated, recorded in {t * 1000:7.1f} ms")
    print(
        f"recording the graph: {record_time:.3f} s wall, {sum(cpu):.3f} s CPU "
        f"({sum(cpu) * 1e6 / max(fills, 1):.2f} us CPU per fill); edges recorded {rec.edge_count}"
    )
    # floor: one numpy pass over the arrays the recorder reads (every round's record)
    arrays = [a for r in rounds for a in (r.rows, r.closed, r.exposure, r.notional)]
    floor = cpu_min(lambda: sum(float(a.sum()) for a in arrays))
    print(f"floor: one pass over the rounds' arrays the recorder reads, {floor * 1e3:.2f} ms CPU")
    print(f"  truncated rounds: {rec.truncated_rounds}")
    t, c = time.perf_counter(), time.process_time()
    g = rec.graph()
    build = time.perf_counter() - t
    print(
        f"networkx graph: {build:.3f} s wall, {time.process_time() - c:.3f} s CPU "
        f"({g.number_of_nodes()} nodes, {g.number_of_edges()} edges)"
    )
    print(f"recording + graph: {record_time + build:.3f} s")
    with tempfile.TemporaryDirectory() as tmp:
        for name, write in (("graphml", rec.write_graphml), ("node-link", rec.write_node_link)):
            t = time.perf_counter()
            write(Path(tmp) / "g")
            print(f"{name}: {time.perf_counter() - t:.3f} s")


if __name__ == "__main__":
    main()
