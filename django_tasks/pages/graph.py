"""The run graph: the runs a run is connected to, drawn left to right as SVG.

Edges are the dependencies the queue records (a future passed as an argument, ``wait_for``)
and retries (a run made to retry a finished one). The graph is the connected part of those
edges around the run - the whole pipeline it belongs to - read in three statements whatever
its size (a recursive query for the run ids, then the runs and the edges), up to
``NODES_SHOWN`` runs. Layers are longest paths from the sources, so every edge points right.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from django.db import connections
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from ..conf import task_settings
from .badges import final_type, state_colour
from .links import run_url_template

__all__ = ["NODES_SHOWN", "Edge", "Node", "RunGraph", "graph_svg", "layers", "run_graph"]

#: The most runs one graph reads and draws.
NODES_SHOWN = 1000

#: Each step looks its neighbours up by id through an index each (the edges both ways, the
#: retries both ways). A join with a union of every edge instead read the whole retry index
#: (or the whole edge table, with other statistics) for every run visited: seconds.
_WALK = """
WITH RECURSIVE walk(id) AS (
    SELECT %(root)s::uuid
    UNION
    SELECT step.id FROM walk, LATERAL (
        SELECT downstream_id FROM django_tasks_taskrundependency WHERE upstream_id = walk.id
        UNION ALL
        SELECT upstream_id FROM django_tasks_taskrundependency WHERE downstream_id = walk.id
        UNION ALL
        SELECT id FROM django_tasks_taskrun WHERE retry_of_id = walk.id
        UNION ALL
        SELECT retry_of_id FROM django_tasks_taskrun
        WHERE id = walk.id AND retry_of_id IS NOT NULL
    ) AS step(id)
)
SELECT id FROM walk LIMIT %(cap)s
"""
_NODES = """
SELECT id, name, task_name, state_type, state_name, retry_of_id
FROM django_tasks_taskrun WHERE id = ANY(%(ids)s)
"""
_EDGES = """
SELECT upstream_id, downstream_id, kind FROM django_tasks_taskrundependency
WHERE downstream_id = ANY(%(ids)s) AND upstream_id = ANY(%(ids)s)
"""


@dataclass(frozen=True)
class Node:
    id: uuid.UUID
    name: str
    task_name: str
    state_type: str
    state_name: str
    recorded: bool = True  # False: an edge names it, its row is not written (yet)


@dataclass(frozen=True)
class Edge:
    upstream: uuid.UUID
    downstream: uuid.UUID
    kind: str  # "data", "wait_for" or "retry"


@dataclass
class RunGraph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    capped: bool = False

    @property
    def key(self) -> str:
        """Changes when a run or an edge joins the graph, or a run's row is written (not when
        a state changes)."""
        digest = hashlib.blake2b(digest_size=8)
        for node in sorted(self.nodes, key=lambda n: n.id):
            digest.update(node.id.bytes + (b"r" if node.recorded else b"-"))
        digest.update(str(len(self.edges)).encode())
        return digest.hexdigest()

    @property
    def all_final(self) -> bool:
        return all(final_type(node.state_type) for node in self.nodes if node.recorded)


def run_graph(run_id: uuid.UUID, cap: int = NODES_SHOWN) -> RunGraph:
    """The runs connected to ``run_id`` by dependencies and retries, and their edges."""
    with connections[task_settings().DATABASE_ALIAS].cursor() as cursor:
        cursor.execute(_WALK, {"root": run_id, "cap": cap})
        ids = [row[0] for row in cursor.fetchall()]
        if len(ids) <= 1:
            cursor.execute(_NODES, {"ids": ids})
            return RunGraph(nodes=[Node(*row[:5]) for row in cursor.fetchall()])
        cursor.execute(_NODES, {"ids": ids})
        rows = cursor.fetchall()
        cursor.execute(_EDGES, {"ids": ids})
        edge_rows = cursor.fetchall()
    wanted = set(ids)
    nodes = {row[0]: Node(*row[:5]) for row in rows}
    edges = [Edge(up, down, kind) for up, down, kind in edge_rows]
    edges += [Edge(row[5], row[0], "retry") for row in rows if row[5] in wanted]
    for missing in wanted - nodes.keys():
        nodes[missing] = Node(missing, "", "(not recorded)", "", "not recorded", recorded=False)
    ordered = [nodes[i] for i in ids]
    return RunGraph(nodes=ordered, edges=edges, capped=len(ids) >= cap)


def layers(graph: RunGraph) -> dict[uuid.UUID, tuple[int, int]]:
    """(column, row) of each node: a node's column is one more than its furthest upstream
    node's (a cycle - only bad data makes one - is cut where it is found), a source's one
    less than its nearest downstream node's; rows within a column follow the mean row of the
    upstream nodes, which keeps most edges straight."""
    upstream: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    downstream: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for edge in graph.edges:
        upstream[edge.downstream].append(edge.upstream)
        downstream[edge.upstream].append(edge.downstream)
    waiting = {node.id: len(set(upstream[node.id])) for node in graph.nodes}
    column = dict.fromkeys(waiting, 0)
    ready = [node.id for node in graph.nodes if not waiting[node.id]]
    placed: set[uuid.UUID] = set()
    while len(placed) < len(waiting):
        if not ready:  # a cycle: start again from the first node not placed
            ready = [next(n.id for n in graph.nodes if n.id not in placed)]
        node_id = ready.pop()
        if node_id in placed:
            continue
        placed.add(node_id)
        for after in set(downstream[node_id]):
            if after in placed:
                continue
            column[after] = max(column[after], column[node_id] + 1)
            waiting[after] -= 1
            if waiting[after] <= 0:
                ready.append(after)
    # A run that waits for nothing sits just left of its first downstream run, not in the
    # first column: its edge then does not cross the columns between.
    for node in graph.nodes:
        next_columns = [column[d] for d in downstream[node.id]]
        if not upstream[node.id] and next_columns:
            column[node.id] = max(min(next_columns) - 1, 0)
    return _rows(graph, column, upstream)


def _rows(
    graph: RunGraph,
    column: dict[uuid.UUID, int],
    upstream: dict[uuid.UUID, list[uuid.UUID]],
) -> dict[uuid.UUID, tuple[int, int]]:
    by_column: dict[int, list[uuid.UUID]] = defaultdict(list)
    for node in graph.nodes:
        by_column[column[node.id]].append(node.id)
    row: dict[uuid.UUID, float] = {}
    for index in sorted(by_column):
        members = by_column[index]
        wanted = {n: _mean_row(row, upstream[n], position) for position, n in enumerate(members)}
        for position, n in enumerate(sorted(members, key=lambda m: (wanted[m], str(m)))):
            row[n] = position
    return {n: (column[n], int(row[n])) for n in column}


def _mean_row(row: dict[uuid.UUID, float], upstream: list[uuid.UUID], default: int) -> float:
    placed = [row[u] for u in upstream if u in row]
    return sum(placed) / len(placed) if placed else default


_BOX_W, _BOX_H, _GAP_X, _GAP_Y, _PAD = 168, 32, 56, 14, 8
_EDGE_STYLE = {"data": "", "wait_for": "6 4", "retry": "2 3"}


def graph_svg(graph: RunGraph, current: uuid.UUID) -> SafeString:
    """The graph as SVG: a box per run (coloured by state, linked to its page; the current
    run outlined), an arrow per edge (dashed: ``wait_for``; dotted: a retry)."""
    place = layers(graph)
    columns = max((c for c, _ in place.values()), default=0) + 1
    rows = max((r for _, r in place.values()), default=0) + 1
    width = _PAD * 2 + columns * _BOX_W + (columns - 1) * _GAP_X
    height = _PAD * 2 + rows * _BOX_H + (rows - 1) * _GAP_Y

    def corner(node_id: uuid.UUID) -> tuple[float, float]:
        c, r = place[node_id]
        return _PAD + c * (_BOX_W + _GAP_X), _PAD + r * (_BOX_H + _GAP_Y)

    # Hundreds of boxes and edges: plain string building (format_html and reverse() for
    # each took 0.3 s for 500 runs); every text is escaped, ids and numbers are made here.
    paths = []
    for edge in graph.edges:
        (x1, y1), (x2, y2) = corner(edge.upstream), corner(edge.downstream)
        x1, y1, y2 = x1 + _BOX_W, y1 + _BOX_H / 2, y2 + _BOX_H / 2
        bend = max((x2 - x1) / 2, 20)
        paths.append(
            f'<path d="M{x1:.0f},{y1:.0f} C{x1 + bend:.0f},{y1:.0f} {x2 - bend:.0f},{y2:.0f} '
            f'{x2:.0f},{y2:.0f}" stroke-dasharray="{_EDGE_STYLE.get(edge.kind, "")}" '
            f'class="djt-edge" data-kind="{escape(edge.kind)}"/>'
        )
    page = run_url_template()
    boxes = [_node(n, corner(n.id), current, page) for n in graph.nodes]
    edges_svg = mark_safe("".join(paths))  # built above from escaped parts
    nodes_svg = mark_safe("".join(boxes))  # built by _node from escaped parts
    return format_html(
        '<svg class="djt-graph" role="group" aria-label="Run graph: {} runs" width="{}" '
        'height="{}" viewBox="0 0 {} {}" data-nodes="{}"><defs><marker id="djt-arrow" '
        'viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="djt-arrow"/>'
        '</marker></defs><g class="djt-edges">{}</g><g>{}</g></svg>',
        len(graph.nodes),
        width,
        height,
        width,
        height,
        len(graph.nodes),
        edges_svg,
        nodes_svg,
    )


def _node(node: Node, at: tuple[float, float], current: uuid.UUID, page: str) -> str:
    """A run's box: escaped text, numbers and ids only."""
    x, y = at
    label = node.name or node.task_name
    short = label if len(label) <= 22 else label[:21] + "…"
    mark = " djt-current" if node.id == current else ""
    box = (
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{_BOX_W}" height="{_BOX_H}" rx="6" '
        f'fill="{state_colour(node.state_type)}" class="djt-node-box{mark}"/>'
        f'<text x="{x + 10:.0f}" y="{y + 20:.0f}" class="djt-node-label">{escape(short)}</text>'
        f"<title>{escape(label)} · {escape(node.state_name)} · {node.id}</title>"
    )
    if not node.recorded:
        return f'<g class="djt-node djt-unrecorded" data-run="{node.id}" data-state="">{box}</g>'
    return (
        f'<a href="{page.format(node.id)}" class="djt-node" data-run="{node.id}" '
        f'data-state="{escape(node.state_type)}">{box}</a>'
    )
