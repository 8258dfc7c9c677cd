"""The simulated cluster's node provider: Ray's fake multi-node provider, plus what a cloud provider does
when a machine dies.

Ray's fake provider keeps a node in its list until the autoscaler terminates it, and the autoscaler never
does when only the node's raylet died: the node stays "uninitialized" forever, still counted against its
type's `max_workers`, so no replacement is launched (measured with Ray 2.60: a GPU-pool node whose raylet
was killed mid-training sat pending for 10 minutes with the job waiting on its placement group). A cloud
provider reports an instance that went away as terminated. This provider does the same: a worker node whose
raylet process exited is dropped from the list (its other processes are stopped), so the autoscaler sees
the type below its demand and starts a new node, as on a real cluster.

The monitor imports it by name (`provider.type: external`, `module: longctx_sim_provider.SimNodeProvider`),
with this folder, which holds nothing else, on the head's PYTHONPATH (`fakecluster.start_head`).
"""

from __future__ import annotations

import logging

from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

logger = logging.getLogger(__name__)

RAYLET = "raylet"  # ray_constants.PROCESS_TYPE_RAYLET


class SimNodeProvider(FakeMultiNodeProvider):
    def _drop_lost_nodes(self) -> None:
        for node_id, entry in list(self._nodes.items()):
            node = entry.get("node")
            if node_id == self._head_node_id or node is None:
                continue
            if any(kind == RAYLET for kind, _ in node.dead_processes()):
                logger.warning("node %s lost its raylet: reporting it terminated", node_id)
                self._nodes.pop(node_id)
                node.kill_all_processes(check_alive=False, allow_graceful=False)

    def non_terminated_nodes(self, tag_filters):
        with self.lock:
            self._drop_lost_nodes()
            return super().non_terminated_nodes(tag_filters)
