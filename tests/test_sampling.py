"""Seeded client sampling: partition-ordered node ids and per-round seeding."""

from __future__ import annotations

import logging
import random

import pytest
from flwr.app import Context, Error, Message, MessageType, RecordDict
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from fedrdskd.clients.client_app import handle_query
from fedrdskd.bookkeeping import wait_for_nodes
from fedrdskd.sampling import (PartitionOrderedGrid, SamplingError, SeededSampling,
                               partition_ordered_grid, query_partition_ids, query_timeouts)


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


def record_of(ordered: PartitionOrderedGrid) -> dict:
    """The sampling record without its timing."""
    return {k: v for k, v in ordered.sampling_record().items() if k != "query_seconds"}


def test_sampling_record_says_whether_every_node_reported():
    grid = ShuffledGrid(4, seed=5)
    queried = grid.get_node_ids()
    ordered = PartitionOrderedGrid(grid, query_partition_ids(grid, queried, 5), queried)
    assert record_of(ordered) == {"seeded": True, "nodes_reported": 4, "nodes": 4,
                                  "nodes_expected": 4}
    silent = ShuffledGrid(4, seed=5, answering=3)
    queried = silent.get_node_ids()
    ordered = PartitionOrderedGrid(silent, query_partition_ids(silent, queried, 5), queried)
    assert record_of(ordered) == {"seeded": False, "nodes_reported": 3, "nodes": 4,
                                  "nodes_expected": 4}
    # a node that joins after the query, without a partition id, also unseeds sampling
    late = ShuffledGrid(4, seed=6)
    known = dict(list(late.partition_of.items())[:3])
    ordered = PartitionOrderedGrid(late, known, queried=list(known))
    assert ordered.sampling_record()["seeded"]
    ordered.get_node_ids()
    assert record_of(ordered) == {"seeded": False, "nodes_reported": 3, "nodes": 4,
                                  "nodes_expected": 4}
    # so does a node that never connected
    ordered = PartitionOrderedGrid(grid, grid.partition_of, expected=5)
    assert record_of(ordered) == {"seeded": False, "nodes_reported": 4, "nodes": 4,
                                  "nodes_expected": 5}


# ---- the partition-id query under load (a fake grid) ---------------------------------------
class SlowGrid(ShuffledGrid):
    """Node ``i`` answers only from the ``answer_at[i]``-th query it gets (0: the first)."""

    def __init__(self, answer_at: list[int | None], *, errors: tuple[int, ...] = ()):
        super().__init__(len(answer_at), seed=7)
        self.answer_at = answer_at
        self.errors = errors
        self.asked = {node: 0 for node in self.node_ids}
        self.timeouts: list[float] = []
        self.batches: list[list[int]] = []

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.timeouts.append(timeout)
        self.batches.append(sorted(self.partition_of[m.metadata.dst_node_id] for m in messages))
        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            partition = self.partition_of[node]
            self.asked[node] += 1
            if partition in self.errors:
                replies.append(Message(Error(code=0, reason="no query handler"),
                                       reply_to=message))
            elif self.answer_at[partition] is not None and \
                    self.asked[node] > self.answer_at[partition]:
                replies.extend(super().send_and_receive([message]))
        return replies


def test_query_timeouts_double_within_the_round_timeout():
    assert query_timeouts(3600) == [60, 120, 240, 480, 960, 1740]
    assert query_timeouts(5) == [5]
    assert query_timeouts(200) == [60, 120, 20]


def test_silent_nodes_are_asked_again_until_they_answer(caplog):
    grid = SlowGrid([0, 1, 2, 0])
    with caplog.at_level(logging.INFO, logger="flwr"):
        ordered = partition_ordered_grid(grid, 3600, expected=4, allow_unseeded=False)
    assert grid.batches == [[0, 1, 2, 3], [1, 2], [2]]  # only the silent ones again
    assert grid.timeouts == [60, 120, 240]
    assert record_of(ordered) == {"seeded": True, "nodes_reported": 4, "nodes": 4,
                                  "nodes_expected": 4}
    assert "asking them again" in caplog.text


def test_nodes_that_never_answer_stop_the_run_unless_unseeded_is_allowed(caplog):
    grid = SlowGrid([0, None, 0, 0], errors=(2,))
    with pytest.raises(SamplingError) as error:
        partition_ordered_grid(grid, 300, expected=4, allow_unseeded=False)
    message = str(error.value)
    assert "2 of 4 nodes did not report their partition id" in message
    assert "within round_timeout=300 s" in message and "allow_unseeded_sampling=true" in message
    assert sum(grid.timeouts[:3]) == 300  # waited the whole round timeout
    assert all(2 not in batch for batch in grid.batches[1:])  # an error is not asked again
    with caplog.at_level(logging.WARNING, logger="flwr"):
        ordered = partition_ordered_grid(SlowGrid([0, None, 0, 0]), 60, expected=4,
                                         allow_unseeded=True)
    assert not ordered.sampling_record()["seeded"]
    assert "did not report their partition id" in caplog.text


def test_missing_nodes_stop_the_run_unless_unseeded_is_allowed(caplog):
    grid = ShuffledGrid(2, seed=1)
    with pytest.raises(SamplingError, match=r"Only 2 of num_clients=3 nodes connected within "
                                            r"connect_timeout=0.01 s.*num-supernodes=3"):
        wait_for_nodes(grid, 3, 0.01, allow_fewer=False, poll_seconds=0.001)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        wait_for_nodes(grid, 3, 0.01, allow_fewer=True, poll_seconds=0.001)
        ordered = partition_ordered_grid(grid, 5, expected=3, allow_unseeded=True)
    assert "starting anyway" in caplog.text
    assert "only 2 of the 3 nodes (num_clients) are connected" in caplog.text.lower()
    assert record_of(ordered)["seeded"] is False
    wait_for_nodes(grid, 2, 0.01, allow_fewer=False)  # enough nodes: returns at once
