"""Seeded client sampling: partition-ordered node ids and per-round seeding."""

from __future__ import annotations

import logging
import random

import pytest
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from fedrdskd.clients.client_app import handle_query
from fedrdskd.sampling import PartitionOrderedGrid, SeededSampling, query_partition_ids


@pytest.fixture(autouse=True)
def _server_identity(server_task_identity):
    """Strategies build messages as a ServerApp would."""


class ShuffledGrid:
    """Random node ids listed in a scrambled order, as a fresh simulation has them."""

    def __init__(self, num_nodes: int, seed: int, *, answering: int | None = None):
        rng = random.Random(seed)
        self.node_ids = [rng.getrandbits(63) for _ in range(num_nodes)]
        self.partition_of = {node: index for index, node in enumerate(self.node_ids)}
        self.listed = list(self.node_ids)
        rng.shuffle(self.listed)
        self.answering = num_nodes if answering is None else answering

    def get_node_ids(self):
        return list(self.listed)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            partition = self.partition_of[node]
            if partition >= self.answering:
                continue
            context = Context(run_id=1, node_id=node, state=RecordDict(), run_config={},
                              node_config={"partition-id": partition})
            reply = handle_query(message, context)
            replies.append(reply)
        return replies


def sampled_partitions(grid_seed: int, round_seed: int, server_round: int) -> list[int]:
    grid = ShuffledGrid(20, grid_seed)
    ordered = PartitionOrderedGrid(grid, query_partition_ids(grid, grid.get_node_ids(), 5))
    sampling = SeededSampling(round_seed)
    sampling.start_round(server_round)
    with sampling.active():
        sampled, _ = sample_nodes(ordered, min_available_nodes=1, sample_size=10)
    return [grid.partition_of[node] for node in sampled]


def test_the_query_maps_every_node_to_its_partition():
    grid = ShuffledGrid(5, seed=1)
    partitions = query_partition_ids(grid, grid.get_node_ids(), timeout=5)
    assert partitions == grid.partition_of
    ordered = PartitionOrderedGrid(grid, partitions)
    assert ordered.get_node_ids() == grid.node_ids  # partition 0, 1, ...


def test_same_seed_samples_the_same_partitions_whatever_the_node_ids():
    first = sampled_partitions(grid_seed=1, round_seed=0, server_round=3)
    second = sampled_partitions(grid_seed=2, round_seed=0, server_round=3)
    assert first == second
    assert sampled_partitions(1, 0, server_round=4) != first
    assert sampled_partitions(1, 1, server_round=3) != first


def test_nodes_without_a_partition_id_come_last_with_a_warning(caplog):
    grid = ShuffledGrid(4, seed=3, answering=2)
    partitions = query_partition_ids(grid, grid.get_node_ids(), timeout=5)
    assert sorted(partitions.values()) == [0, 1]
    ordered = PartitionOrderedGrid(grid, partitions)
    with caplog.at_level(logging.WARNING):
        listed = ordered.get_node_ids()
    assert listed[:2] == grid.node_ids[:2]
    assert listed[2:] == sorted(grid.node_ids[2:])
    assert "did not report a partition id" in caplog.text


def test_seeded_sampling_leaves_the_global_random_alone():
    random.seed(11)
    expected = random.random()
    random.seed(11)
    sampling = SeededSampling(0)
    sampling.start_round(1)
    with sampling.active():
        first = random.sample(range(100), 5)
        continued = random.sample(range(100), 5)  # evaluate sampling continues the stream
    assert random.random() == expected
    sampling.start_round(1)
    with sampling.active():
        assert random.sample(range(100), 5) == first
    with sampling.active():
        assert random.sample(range(100), 5) == continued
    unseeded = SeededSampling(None)
    unseeded.start_round(1)
    random.seed(11)
    with unseeded.active():
        assert random.random() == expected  # None: Flower's own sampling


def test_replies_come_back_in_partition_order():
    grid = ShuffledGrid(4, seed=4)
    ordered = PartitionOrderedGrid(grid, grid.partition_of)
    queries = [Message(content=RecordDict(), message_type=MessageType.QUERY, dst_node_id=n)
               for n in grid.get_node_ids()]
    assert [r.metadata.src_node_id for r in grid.send_and_receive(queries)] != grid.node_ids
    in_order = ordered.send_and_receive(queries)
    assert [r.metadata.src_node_id for r in in_order] == grid.node_ids


def test_sampling_record_says_whether_every_node_reported():
    grid = ShuffledGrid(4, seed=5)
    queried = grid.get_node_ids()
    ordered = PartitionOrderedGrid(grid, query_partition_ids(grid, queried, 5), queried)
    assert ordered.sampling_record() == {"seeded": True, "nodes_reported": 4, "nodes": 4}
    silent = ShuffledGrid(4, seed=5, answering=3)
    queried = silent.get_node_ids()
    ordered = PartitionOrderedGrid(silent, query_partition_ids(silent, queried, 5), queried)
    assert ordered.sampling_record() == {"seeded": False, "nodes_reported": 3, "nodes": 4}
    # a node that joins after the query, without a partition id, also unseeds sampling
    late = ShuffledGrid(4, seed=6)
    known = dict(list(late.partition_of.items())[:3])
    ordered = PartitionOrderedGrid(late, known, queried=list(known))
    assert ordered.sampling_record()["seeded"]
    ordered.get_node_ids()
    assert ordered.sampling_record() == {"seeded": False, "nodes_reported": 3, "nodes": 4}
