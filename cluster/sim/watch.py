"""Watch a simulated cluster while a job runs: nodes per type over time, where each actor ran, the project's
Prometheus gauges, and every listening socket of the cluster's processes.

    w = Watcher(head_temp_dir, dashboard, node_types)
    w.poll()                    # every couple of seconds while the job runs
    w.finish()                  # the final actor and node lists (dead ones included)
    print(render(w.summary(...)))

Nodes and actors come from Ray's State API (`ray.util.state.list_nodes` / `list_actors` against the
dashboard, token auth on); the GCS keeps dead nodes and actors with their node ids, so where a Ray Data actor
or a training worker ran is known after its node is gone. Gauges are scraped from every node's metrics
endpoint listed in `<temp dir>/prom_metrics_service_discovery.json` (what Prometheus reads); a gauge lives on
the node of the process that set it, so they are scraped during the run, before that node scales away.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import headctl
import psutil

logger = logging.getLogger(__name__)

# Ray's built-in resources; what is left on a node is the custom resources that tell its type.
_BUILTIN = {"CPU", "GPU", "memory", "object_store_memory"}
_GAUGE_LINE = re.compile(r"^(ray_longctx_[A-Za-z0-9_]+)(\{[^}]*\})?\s+(\S+)")

# Actor kinds, from the class Ray reports: Ray Train's workers, or the Ray Data operator an actor serves
# (`MapWorker(MapBatches(<the project's class>))`).
KINDS = (
    ("training worker", "RayTrainWorker"),
    ("synthesis actor", "ComposeActor"),
    ("evaluation actor", "ModelWorker"),
    ("training data actor", "TokenizePack"),
)


def _rows(items) -> list[dict]:
    return [dataclasses.asdict(x) if dataclasses.is_dataclass(x) else dict(x) for x in items]


def actor_kind(actor: dict) -> str | None:
    """'synthesis actor', 'training worker', 'training data actor', 'evaluation actor' or None."""
    label = f"{actor.get('class_name') or ''} {actor.get('repr_name') or ''}"
    return next((kind for kind, marker in KINDS if marker in label), None)


def socket_owner(pid: int) -> str:
    """The first 80 characters of `pid`'s command line, "?" when it cannot be read."""
    try:
        return " ".join(psutil.Process(pid).cmdline())[:80]
    except psutil.Error:
        return "?"


class Watcher:
    """Samples the cluster; keeps everything it saw (times are seconds since `t0`)."""

    def __init__(self, temp_dir: Path, dashboard: str, node_types: dict[str, dict], t0: float | None = None):
        self.temp_dir = Path(temp_dir)
        self.dashboard = dashboard
        self.t0 = t0 or time.time()
        # custom-resource signature of each worker type -> its name (the GPU type's is {SIM_ACCELERATOR})
        self.signatures = {
            frozenset(k for k in spec["resources"] if k not in _BUILTIN): name
            for name, spec in node_types.items()
        }
        self.type_names = list(node_types)
        self.samples: list[dict] = []  # {t, counts: {type: alive}}
        self.node_type: dict[str, str] = {}
        self.nodes: dict[str, dict] = {}
        self.actors: list[dict] = []
        self.gauges: dict[str, dict] = {}  # name -> {value, labels, t}
        self.sockets: set[tuple[str, int]] = set()
        self.exposed: set[tuple[str, int, int, str]] = set()
        self.rendezvous: set[tuple[str, int, int, str]] = set()
        self._last_scrape = 0.0

    # ---- nodes -------------------------------------------------------------------------------------------
    def _type_of(self, node: dict) -> str:
        if node.get("is_head_node"):
            return "head"
        keys = frozenset(
            k for k in (node.get("resources_total") or {}) if k not in _BUILTIN and not k.startswith("node:")
        )
        keys = frozenset(k for k in keys if not k.startswith("accelerator_type:"))
        return self.signatures.get(keys, "other")

    def list_nodes(self) -> list[dict]:
        from ray.util.state import list_nodes

        rows = _rows(
            list_nodes(address=self.dashboard, limit=1000, detail=True, raise_on_missing_output=False)
        )
        for node in rows:
            self.node_type.setdefault(node["node_id"], self._type_of(node))
            self.nodes[node["node_id"]] = node
        return rows

    def alive_counts(self, rows: list[dict]) -> dict[str, int]:
        alive = Counter(self.node_type[n["node_id"]] for n in rows if n.get("state") == "ALIVE")
        return {"head": alive.get("head", 0), **{t: alive.get(t, 0) for t in self.type_names}}

    # ---- metrics -----------------------------------------------------------------------------------------
    def scrape(self) -> None:
        """Read every node's Prometheus endpoint once; keep the latest value of each ray_longctx_* gauge."""
        try:
            groups = json.loads((self.temp_dir / "prom_metrics_service_discovery.json").read_text())
        except (OSError, ValueError):
            return
        now = round(time.time() - self.t0, 1)
        for target in {t for g in groups for t in g.get("targets", [])}:
            try:
                with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as resp:
                    body = resp.read().decode(errors="replace")
            except (OSError, urllib.error.URLError):
                continue  # a node that just went away
            for line in body.splitlines():
                m = _GAUGE_LINE.match(line)
                if m:
                    self.gauges[m.group(1)] = {
                        "value": float(m.group(3)),
                        "labels": m.group(2) or "",
                        "t": now,
                    }

    # ---- sockets -----------------------------------------------------------------------------------------
    def check_sockets(self) -> None:
        """Record every listening socket of the cluster's processes; the ones beyond loopback with the
        process that owns them (`exposed`), apart from torch.distributed's rendezvous store on Ray Train's
        rank 0 (`rendezvous`): torch's TCPStore always binds to all interfaces and has no option to bind
        to one address, so it is reported on its own rather than hidden."""
        pids = {p.pid for p in headctl.head_processes(str(self.temp_dir.resolve()))}
        for ip, port, pid in headctl.listening_sockets(pids):
            self.sockets.add((ip, port))
            if headctl.is_loopback(ip):
                continue
            self.classify((ip, port, pid), socket_owner(pid))

    def classify(self, key: tuple[str, int, int], title: str) -> None:
        """File one non-loopback socket (ip, port, pid) by its owner's command line. A socket first seen
        while its owner's command line could not be read ("?": a process being born or reaped) and later
        read as Ray Train's worker is the rendezvous store, not an exposed server (CI saw exactly that)."""
        if "RayTrainWorker" in title:
            self.rendezvous.add((*key, title))
            self.exposed = {e for e in self.exposed if e[:3] != key}
        elif not any(r[:3] == key for r in self.rendezvous):
            self.exposed.add((*key, title))

    # ---- the loop body -----------------------------------------------------------------------------------
    def poll(self, scrape_every: float = 5.0) -> dict[str, int]:
        """One sample: alive nodes per type (recorded when it changes), sockets, and the gauges every
        `scrape_every` seconds. Returns the alive counts."""
        counts = self.alive_counts(self.list_nodes())
        if not self.samples or self.samples[-1]["counts"] != counts:
            self.samples.append({"t": round(time.time() - self.t0, 1), "counts": counts})
        self.check_sockets()
        if time.time() - self._last_scrape >= scrape_every:
            self._last_scrape = time.time()
            self.scrape()
        return counts

    def finish(self) -> None:
        """Final node and actor lists (the GCS keeps dead ones, with the node each ran on)."""
        from ray.util.state import list_actors

        self.list_nodes()
        rows = _rows(
            list_actors(address=self.dashboard, limit=10000, detail=True, raise_on_missing_output=False)
        )
        self.actors = [
            {
                "kind": actor_kind(a),
                "actor_id": a["actor_id"],
                "class_name": a.get("class_name"),
                "repr_name": a.get("repr_name"),
                "node_id": a.get("node_id"),
                "node_type": self.node_type.get(a.get("node_id") or "", "?"),
                "state": a.get("state"),
                "num_restarts": a.get("num_restarts"),
            }
            for a in rows
        ]

    # ---- the report --------------------------------------------------------------------------------------
    def placement(self) -> dict[str, dict]:
        """kind -> {count, nodes: [node ids], types: {type: count}} of the project's actors."""
        out: dict[str, dict] = {}
        for a in self.actors:
            if not a["kind"]:
                continue
            entry = out.setdefault(a["kind"], {"count": 0, "nodes": [], "types": {}})
            entry["count"] += 1
            if a["node_id"] and a["node_id"] not in entry["nodes"]:
                entry["nodes"].append(a["node_id"])
            entry["types"][a["node_type"]] = entry["types"].get(a["node_type"], 0) + 1
        return out

    def node_records(self) -> list[dict]:
        """Every worker node seen: id, type, state, up/down times (seconds since t0)."""
        out = []
        for node_id, n in self.nodes.items():
            kind = self.node_type.get(node_id, "?")
            start, end = n.get("start_time_ms"), n.get("end_time_ms")
            out.append(
                {
                    "node_id": node_id,
                    "type": kind,
                    "state": n.get("state"),
                    "up_s": round(start / 1000 - self.t0, 1) if start else None,
                    "down_s": round(end / 1000 - self.t0, 1) if end and n.get("state") == "DEAD" else None,
                }
            )
        return sorted(out, key=lambda r: (r["type"] != "head", r["up_s"] or 0))

    def max_alive(self) -> dict[str, int]:
        return {t: max((s["counts"].get(t, 0) for s in self.samples), default=0) for t in self.type_names}


def render(summary: dict) -> str:
    """The timeline as `make cluster-sim` prints it."""
    job = summary["job"]
    if any(summary.get("max_alive", {}).values()):
        scaled = f"worker nodes back to zero: {summary['scaled_to_zero']} " + (
            f"at t={summary['zero_at_s']} s" if summary.get("zero_at_s") is not None else ""
        )
    else:  # nothing scaled up, so nothing came back down either
        scaled = "no worker node was started (nothing scaled)"
    lines = [
        f"longctx cluster-sim: job {job['id']} {job['status']} after {job['seconds']} s (submitted at t=0); "
        + scaled,
        "",
        "nodes per type over time (t = seconds since submission; a line each time a count changes):",
    ]
    types = summary["types"]
    for s in summary["samples"]:
        counts = "  ".join(f"{t}={s['counts'].get(t, 0)}" for t in ["head", *types])
        lines.append(f"  t={s['t']:>7.1f}  {counts}")
    lines += ["", "nodes (ids as Ray reports them):"]
    for n in summary["nodes"]:
        up = "?" if n["up_s"] is None else f"{n['up_s']:.1f}"
        down = "-" if n["down_s"] is None else f"{n['down_s']:.1f}"
        lines.append(f"  {n['node_id']}  {n['type']:<16} {n['state']:<6} up t={up:>7}  down t={down:>7}")
    lines += ["", "where the actors ran:"]
    for kind, p in summary["placement"].items():
        types_txt = ", ".join(f"{t} x{c}" for t, c in p["types"].items())
        lines.append(f"  {kind:<20} {p['count']} on {len(p['nodes'])} node(s) [{types_txt}]")
        for node_id in p["nodes"]:
            lines.append(f"      {node_id}")
    lines += ["", "project gauges scraped from the cluster's Prometheus endpoints (last value seen):"]
    for name, g in sorted(summary["gauges"].items()):
        run = re.search(r'run="([^"]*)"', g["labels"])
        lines.append(f'  {name}{{run="{run.group(1) if run else "?"}"}} = {g["value"]:.6g}  (t={g["t"]})')
    exposed, rendezvous = summary["exposed_sockets"], summary.get("rendezvous_sockets") or []
    lines += [
        "",
        f"listening sockets of the cluster's processes: {summary['sockets_seen']} seen; Ray's own servers "
        + ("all on loopback" if not exposed else f"EXPOSED: {exposed}"),
    ]
    for ip, port, pid, title in rendezvous:
        lines.append(
            f"  beyond loopback while training: torch.distributed rendezvous (TCPStore) {ip}:{port}, "
            f"pid {pid} ({title.split()[0] if title else '?'}): torch binds it to all interfaces"
        )
    for shot in summary.get("screenshots", []):
        shows = ", ".join(f"{k!r}: {'yes' if v else 'NO'}" for k, v in shot["shows"].items())
        lines.append(f"dashboard {shot['page']}: {shot['png']} (shows {shows})")
    if summary.get("run_dir"):
        missing = summary.get("run_missing") or []
        lines.append(
            f"run folder: {summary['run_dir']} ({'complete' if not missing else f'missing {missing}'})"
        )
    return "\n".join(lines)
