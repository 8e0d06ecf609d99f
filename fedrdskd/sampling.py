"""Seeded client sampling: the same seed samples the same partitions in every run.

Flower's strategies sample with ``random.sample(list(grid.get_node_ids()), n)``. Node
ids are random 64-bit numbers (fresh in every simulation, from ``os.urandom``) and the
grid returns them in no fixed order, so even a seeded ``random`` would pick different
*partitions* in two runs with the same seed, and two strategies compared "on the same
seed" would train on different clients.

The ServerApp therefore asks every node once for its ``partition-id`` (a ``query``
message that the fedrdskd ClientApp answers from its node config), hands the strategy
a :class:`PartitionOrderedGrid` that lists node ids in partition order, and re-seeds
``random`` from ``(seed, round)`` right before each round's sampling
(:func:`seed_round_sampling`). Nodes that do not answer the query (another ClientApp)
are listed after the known ones, by node id, with a warning.

Whether that worked goes into ``results.json`` as ``summary.sampling``
(:meth:`PartitionOrderedGrid.sampling_record`): ``{"seeded", "nodes_reported",
"nodes"}``; ``fedrdskd-report`` pairs only runs whose sampling was seeded.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from logging import WARNING
from typing import Any

from flwr.app import Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from fedrdskd.protocol import NODE_INFO_KEY, PARTITION_ID_KEY

SAMPLING_SUMMARY_KEY = "sampling"
"""Key of the sampling record in ``results.json``'s ``summary``."""


def partition_query_reply(message: Message, partition_id: int) -> Message:
    """The ClientApp's answer to the query: ``{NODE_INFO_KEY: {PARTITION_ID_KEY: id}}``."""
    content = RecordDict({NODE_INFO_KEY: MetricRecord({PARTITION_ID_KEY: partition_id})})
    return Message(content=content, reply_to=message)


def query_partition_ids(grid: Grid, node_ids: Iterable[int], timeout: float) -> dict[int, int]:
    """Ask each node for its partition id.

    Returns
    -------
    dict[int, int]
        ``node id -> partition id`` for the nodes that answered.
    """
    messages = [Message(content=RecordDict(), message_type=MessageType.QUERY,
                        dst_node_id=node_id) for node_id in node_ids]
    partitions: dict[int, int] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if not reply.has_content() or NODE_INFO_KEY not in reply.content:
            continue
        info = reply.content[NODE_INFO_KEY]
        if PARTITION_ID_KEY in info:
            partitions[reply.metadata.src_node_id] = int(info[PARTITION_ID_KEY])
    return partitions


def seed_round_sampling(seed: int, server_round: int) -> None:
    """Re-seed ``random`` (which Flower samples clients with) for this round."""
    random.seed(f"fedrdskd-sampling-{seed}-{server_round}")


class PartitionOrderedGrid:
    """A Grid whose ``get_node_ids`` lists nodes in partition order.

    Everything else is delegated to the wrapped grid.

    Parameters
    ----------
    grid : Grid
        The real grid.
    partitions : Mapping[int, int]
        ``node id -> partition id`` (from :func:`query_partition_ids`).
    queried : Iterable[int] | None (default: None)
        The node ids that were asked (default: those in ``partitions``), for
        :meth:`sampling_record`.
    """

    def __init__(self, grid: Grid, partitions: Mapping[int, int],
                 queried: Iterable[int] | None = None) -> None:
        self._grid = grid
        self.partitions = dict(partitions)
        self.queried = set(self.partitions if queried is None else queried)
        self._warned: set[int] = set()

    def sampling_record(self) -> dict[str, Any]:
        """Whether client sampling followed the seed, for ``summary.sampling``.

        Returns
        -------
        dict[str, Any]
            ``nodes``: the nodes asked for their partition id plus any node listed
            later without one; ``nodes_reported``: those that answered; ``seeded``:
            every node answered (so sampling, in partition order, followed the seed).
        """
        nodes = len(self.queried | self._warned)
        reported = len(self.partitions)
        return {"seeded": nodes > 0 and reported >= nodes, "nodes_reported": reported,
                "nodes": nodes}

    def get_node_ids(self) -> list[int]:
        """Connected node ids, sorted by partition id (unknown nodes last, by id)."""
        node_ids = list(self._grid.get_node_ids())
        unknown = [n for n in node_ids if n not in self.partitions]
        if set(unknown) - self._warned:
            log(WARNING, "Nodes %s did not report a partition id; client sampling cannot "
                "follow the seed for them (they are sampled in node-id order).",
                sorted(set(unknown) - self._warned))
            self._warned.update(unknown)
        known = sorted((n for n in node_ids if n in self.partitions),
                       key=lambda n: (self.partitions[n], n))
        return known + sorted(unknown)

    def in_partition_order(self, replies: Iterable[Message]) -> list[Message]:
        """``replies`` sorted by their sender's partition, so that aggregation sums in
        the same order in every run (reply arrival order varies)."""
        def key(reply: Message) -> tuple[float, int]:
            node_id = reply.metadata.src_node_id
            return (self.partitions.get(node_id, float("inf")), node_id)

        return sorted(replies, key=key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)
