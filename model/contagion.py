"""The contagion graph: who liquidated whom.

A ``networkx.DiGraph``. Nodes are trader ids, plus one root node ``step:<t>`` per step with
liquidations. Round-1 liquidations of step ``t`` hang from ``step:<t>``. A liquidation in round
``r >= 2`` is attributed to the liquidations of round ``r - 1`` that moved the prices it lost
on: edge ``i -> j`` with weight = ``i``'s share of the flow that hurt ``j``:

* the loss ``j`` took on asset ``a`` from round ``r - 1``'s move is
  ``l_ja = max(0, -q_ja dP_a)`` (``q_ja`` its position when round ``r`` began);
* ``i``'s share of the flow on ``a`` that pushed the price that way is
  ``s_ia = max(0, +-x_ia) / sum_k max(0, +-x_ka)`` (sellers when the price fell, buyers when it
  rose; ``x`` the closed quantity, sells positive);
* ``w_ij = sum_a (l_ja / sum_b l_jb) s_ia``; with one asset this is ``x_i / X``.

Weights into each victim sum to 1. A victim that lost nothing on round ``r - 1``'s move (it was
still under maintenance after a partial liquidation, say) is attributed by each liquidator's
share of the round's whole closed notional.

During a run the recorder keeps edges in numpy arrays; :meth:`ContagionRecorder.graph` builds the
networkx graph once, on demand.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ContagionRecorder", "attribution_weights"]


def attribution_weights(exposure, price_move, closed_prev, notional_prev=None):
    """(k_victims, k_liquidators) weights of round ``r - 1``'s liquidators in each victim.

    Args:
        exposure: (k_v, A) victims' positions when round ``r`` began.
        price_move: (A,) the price change caused by round ``r - 1``.
        closed_prev: (k_l, A) quantities closed in round ``r - 1`` (sells positive).
        notional_prev: (k_l,) closed notional of each liquidator (for the fallback rule).
    """
    exposure = np.asarray(exposure, dtype=float)
    closed_prev = np.asarray(closed_prev, dtype=float)
    loss = np.maximum(-exposure * price_move[None, :], 0.0)  # (k_v, A)
    direction = np.where(price_move < 0, 1.0, -1.0)  # sellers push prices down
    push = np.maximum(closed_prev * direction[None, :], 0.0)  # (k_l, A)
    push_total = push.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(push_total > 0, push / np.where(push_total > 0, push_total, 1.0), 0.0)
    loss = np.where(push_total[None, :] > 0, loss, 0.0)
    loss_total = loss.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        mix = np.where(loss_total > 0, loss / np.where(loss_total > 0, loss_total, 1.0), 0.0)
    weights = mix @ share.T  # (k_v, k_l)
    orphan = loss_total[:, 0] <= 0
    if orphan.any():
        if notional_prev is None:
            notional_prev = np.abs(closed_prev).sum(axis=1)
        tot = notional_prev.sum()
        fallback = (
            notional_prev / tot
            if tot > 0
            else np.full(len(notional_prev), 1.0 / len(notional_prev))
        )
        weights[orphan] = fallback[None, :]
    return weights


class ContagionRecorder:
    """Collects roots, edges and node attributes round by round.

    Args:
        ids: (n,) trader id of each book row.
        initial_leverage: (n,) leverage of each account at the start.
        max_edges: keep every edge while the graph has fewer than this many.
        top_contributors: beyond ``max_edges``, edges kept per victim (the rest is one
            aggregate edge from a node ``others:<step>:<round>``).
    """

    def __init__(self, ids, initial_leverage, *, max_edges=1_000_000, top_contributors=5):
        self.ids = np.asarray(ids)
        self.initial_leverage = np.asarray(initial_leverage, dtype=float)
        self.max_edges = int(max_edges)
        self.top = int(top_contributors)
        self._src: list[np.ndarray] = []  # source: book row, or -1 - root index
        self._dst: list[np.ndarray] = []
        self._w: list[np.ndarray] = []
        self._step: list[np.ndarray] = []
        self._round: list[np.ndarray] = []
        self.roots: list[str] = []  # names of root / aggregate nodes; index -1 - k in _src
        self.edge_count = 0
        self.truncated = False
        n = len(self.ids)
        self.first_step = np.zeros(n, dtype=np.int64)
        self.first_round = np.zeros(n, dtype=np.int64)
        self.events = np.zeros(n, dtype=np.int64)
        self.notional = np.zeros(n)
        self._prev = None

    def _root(self, name: str) -> int:
        self.roots.append(name)
        return -len(self.roots)

    def _add(self, src, dst, w, step, rnd):
        self._src.append(np.asarray(src, dtype=np.int64))
        self._dst.append(np.asarray(dst, dtype=np.int64))
        self._w.append(np.asarray(w, dtype=float))
        self._step.append(np.full(len(dst), step, dtype=np.int64))
        self._round.append(np.full(len(dst), rnd, dtype=np.int64))
        self.edge_count += len(dst)

    def record(self, rec) -> None:
        """Add one liquidation round (a :class:`model.liquidation.RoundRecord`)."""
        rows = rec.rows
        new = self.events[rows] == 0
        self.first_step[rows[new]] = rec.step
        self.first_round[rows[new]] = rec.round
        self.events[rows] += 1
        self.notional[rows] += rec.notional
        prev = (
            self._prev
            if (
                self._prev is not None
                and self._prev.step == rec.step
                and self._prev.round == rec.round - 1
            )
            else None
        )
        if prev is None:
            root = self._root(f"step:{rec.step}")
            self._add(np.full(rows.size, root), rows, np.ones(rows.size), rec.step, rec.round)
        else:
            move = prev.price_after - prev.price_before
            w = attribution_weights(rec.exposure, move, prev.closed, prev.notional)
            self._add_weighted(prev.rows, rows, w, rec.step, rec.round)
        self._prev = rec

    def _add_weighted(self, src_rows, dst_rows, w, step, rnd):
        k_v, k_l = w.shape
        nz = w > 0
        count = int(nz.sum())
        if self.edge_count + count <= self.max_edges:
            vi, li = np.nonzero(nz)
            self._add(src_rows[li], dst_rows[vi], w[vi, li], step, rnd)
            return
        # Over budget: each victim keeps its top contributors plus one aggregate edge.
        self.truncated = True
        keep = min(self.top, k_l)
        top = (
            np.argpartition(-w, keep - 1, axis=1)[:, :keep]
            if keep < k_l
            else np.tile(np.arange(k_l), (k_v, 1))
        )
        tw = np.take_along_axis(w, top, axis=1)
        vi = np.repeat(np.arange(k_v), keep)
        li = top.ravel()
        wk = tw.ravel()
        good = wk > 0
        self._add(src_rows[li[good]], dst_rows[vi[good]], wk[good], step, rnd)
        rest = 1.0 - tw.sum(axis=1)
        has_rest = rest > 1e-12
        if has_rest.any():
            agg = self._root(f"others:{step}:{rnd}")
            self._add(
                np.full(int(has_rest.sum()), agg), dst_rows[has_rest], rest[has_rest], step, rnd
            )

    def edges(self) -> dict[str, np.ndarray]:
        """Edge list as columns: src/dst as book rows (negative: root or aggregate node)."""
        if not self._src:
            z = np.zeros(0, dtype=np.int64)
            return {"src": z, "dst": z, "weight": np.zeros(0), "step": z, "round": z}
        return {
            "src": np.concatenate(self._src),
            "dst": np.concatenate(self._dst),
            "weight": np.concatenate(self._w),
            "step": np.concatenate(self._step),
            "round": np.concatenate(self._round),
        }

    def graph(self):
        """The networkx DiGraph (built from the arrays; repeated edges add their weights)."""
        import networkx as nx

        g = nx.DiGraph()
        e = self.edges()
        liq = np.flatnonzero(self.events > 0)
        g.add_nodes_from(
            (
                int(self.ids[r]),
                {
                    "kind": "trader",
                    "first_step": int(self.first_step[r]),
                    "first_round": int(self.first_round[r]),
                    "events": int(self.events[r]),
                    "liquidated_notional": float(self.notional[r]),
                    "initial_leverage": float(self.initial_leverage[r]),
                },
            )
            for r in liq
        )
        for name in self.roots:
            kind = "step" if name.startswith("step:") else "aggregate"
            g.add_node(name, kind=kind, step=int(name.split(":")[1]))
        names = self._node_names(e["src"])
        dsts = self.ids[e["dst"]]
        for s, d, w, st, rd in zip(
            names,
            dsts.tolist(),
            e["weight"].tolist(),
            e["step"].tolist(),
            e["round"].tolist(),
            strict=True,
        ):
            if g.has_edge(s, d):
                data = g[s][d]
                data["weight"] += w
                data["events"] += 1
            else:
                g.add_edge(s, d, weight=w, step=st, round=rd, events=1)
        return g

    def _node_names(self, src):
        out = []
        ids = self.ids
        for s in src.tolist():
            out.append(self.roots[-1 - s] if s < 0 else int(ids[s]))
        return out
