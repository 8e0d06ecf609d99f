"""Seeded client sampling: the same seed samples the same partitions in every run.

Flower's strategies sample with ``random.sample(list(grid.get_node_ids()), n)``. Node
ids are random 64-bit numbers (fresh in every simulation, from ``os.urandom``) and the
grid returns them in no fixed order, so even a seeded ``random`` would pick different
*partitions* in two runs with the same seed, and two strategies compared "on the same
seed" would train on different clients.

Three pieces make sampling follow the seed:

- the ServerApp asks every node for its ``partition-id`` (a ``query`` message that
  the fedrdskd ClientApp answers from its node config), re-asking the nodes that have
  not answered for as long as ``round_timeout`` allows (:func:`query_partition_ids`),
  and hands the strategy a :class:`PartitionOrderedGrid` (:func:`partition_ordered_grid`),
  which lists node ids in partition order and returns every batch of replies in
  partition order, so that aggregation sums in the same order in every run. If nodes
  are missing or never report their partition id, the run stops with a
  :class:`SamplingError` that says why, unless unseeded sampling is allowed: then those
  nodes are listed after the known ones, by node id, with a warning;
- the strategy samples from its own stream seeded by ``(seed, round)``
  (:class:`SeededSampling`, used by
  :class:`~fedrdskd.strategies.client_ensemble.ClientEnsembleMixin`), swapped in for
  ``random``'s state only while Flower samples, so the global ``random`` is never
  re-seeded.

Whether that worked goes into ``results.json`` as ``summary.sampling``
(:meth:`PartitionOrderedGrid.sampling_record`): ``{"seeded", "nodes_reported",
"nodes", "nodes_expected", "query_seconds"}``; ``fedrdskd-report`` pairs only runs whose
sampling was seeded.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from logging import INFO, WARNING
from typing import TYPE_CHECKING, Any

from flwr.app import Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from fedrdskd.protocol import NODE_INFO_KEY, PARTITION_ID_KEY

if TYPE_CHECKING:
    from flwr.proto.node_pb2 import NodeInfo
    from flwr.supercore.run import Run

SAMPLING_SUMMARY_KEY = "sampling"
"""Key of the sampling record in ``results.json``'s ``summary``."""
FIRST_QUERY_TIMEOUT = 60.0
"""Seconds the first partition-id query waits; each later one waits twice as long."""


class SamplingError(RuntimeError):
    """Client sampling cannot follow the seed and the run does not allow that."""


def query_timeouts(total: float, first: float = FIRST_QUERY_TIMEOUT) -> list[float]:
    """The waits of successive queries: ``first``, twice that, ... adding up to ``total``."""
    timeouts: list[float] = []
    while sum(timeouts) < total:
        timeouts.append(min(first * 2 ** len(timeouts), total - sum(timeouts)))
    return timeouts


def partition_query_reply(message: Message, partition_id: int) -> Message:
    """The ClientApp's answer to the query: ``{NODE_INFO_KEY: {PARTITION_ID_KEY: id}}``."""
    content = RecordDict({NODE_INFO_KEY: MetricRecord({PARTITION_ID_KEY: partition_id})})
    return Message(content=content, reply_to=message)


def _reported_partition(reply: Message) -> int | None:
    """The partition id a query reply reports, or ``None``."""
    if not reply.has_content() or NODE_INFO_KEY not in reply.content:
        return None
    partition = reply.content[NODE_INFO_KEY].get(PARTITION_ID_KEY)
    return int(partition) if isinstance(partition, (int, float)) else None


def query_partition_ids(grid: Grid, node_ids: Iterable[int], timeout: float) -> dict[int, int]:
    """Ask each node for its partition id, re-asking the silent ones, for up to ``timeout`` s.

    The queries wait :func:`query_timeouts` (60 s, then 120 s, ... within ``timeout``);
    each asks again the nodes that have not answered yet. A node that answers without
    a partition id (an error, another ClientApp) is not asked again.

    Returns
    -------
    dict[int, int]
        ``node id -> partition id`` for the nodes that answered.
    """
    pending, partitions = list(node_ids), {}
    for wait in query_timeouts(timeout):
        messages = [Message(content=RecordDict(), message_type=MessageType.QUERY,
                            dst_node_id=node_id) for node_id in pending]
        answered = set()
        for reply in grid.send_and_receive(messages, timeout=wait):
            answered.add(reply.metadata.src_node_id)
            partition = _reported_partition(reply)
            if partition is not None:
                partitions[reply.metadata.src_node_id] = partition
        pending = [node_id for node_id in pending if node_id not in answered]
        if not pending:
            break
        log(INFO, "%d of %d nodes have not answered the partition-id query after %.0f s; "
            "asking them again.", len(pending), len(partitions) + len(pending), wait)
    return partitions


class SeededSampling:
    """A client-sampling stream seeded by ``(seed, round)`` for Flower's ``random.sample``.

    Flower's strategies sample with the global ``random``; :meth:`active` swaps this
    round's stream in for the duration of a ``configure_train`` / ``configure_evaluate``
    and swaps the global state back afterwards. A round's training and evaluation
    sampling draw from one stream, started by :meth:`start_round`.

    Parameters
    ----------
    seed : int | None
        The experiment seed; ``None`` leaves sampling to the global ``random``.
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._state: tuple[Any, ...] | None = None

    def start_round(self, server_round: int) -> None:
        """Restart the stream for ``server_round`` (the same in every run of the seed)."""
        if self.seed is not None:
            self._state = random.Random(f"fedrdskd-sampling-{self.seed}-{server_round}"
                                        ).getstate()

    @contextmanager
    def active(self) -> Iterator[None]:
        """Let ``random`` draw from this round's stream inside the ``with`` block."""
        if self._state is None:
            yield
            return
        outside = random.getstate()
        random.setstate(self._state)
        try:
            yield
        finally:
            self._state = random.getstate()
            random.setstate(outside)


class PartitionOrderedGrid(Grid):
    """A Grid that lists nodes, and returns replies, in partition order.

    Everything else is the wrapped grid's.

    Parameters
    ----------
    grid : Grid
        The real grid.
    partitions : Mapping[int, int]
        ``node id -> partition id`` (from :func:`query_partition_ids`).
    queried : Iterable[int] | None (default: None)
        The node ids that were asked (default: those in ``partitions``), for
        :meth:`sampling_record`.
    expected : int (default: 0)
        The nodes the run was meant to have (``num_clients``), for :meth:`sampling_record`.
    query_seconds : float (default: 0.0)
        How long the partition-id query took, for :meth:`sampling_record`.
    """

    def __init__(self, grid: Grid, partitions: Mapping[int, int],
                 queried: Iterable[int] | None = None, *, expected: int = 0,
                 query_seconds: float = 0.0) -> None:
        self._grid = grid
        self.partitions = dict(partitions)
        self.queried = set(self.partitions if queried is None else queried)
        self.expected = expected
        self.query_seconds = query_seconds
        self._warned: set[int] = set()

    def sampling_record(self) -> dict[str, Any]:
        """Whether client sampling followed the seed, for ``summary.sampling``.

        Returns
        -------
        dict[str, Any]
            ``nodes``: the nodes asked for their partition id plus any node listed
            later without one; ``nodes_reported``: those that answered;
            ``nodes_expected``: the nodes the run was meant to have; ``seeded``: every
            node answered and none was missing (so sampling, in partition order,
            followed the seed); ``query_seconds``: how long the query took.
        """
        nodes = len(self.queried | self._warned)
        reported = len(self.partitions)
        return {"seeded": nodes > 0 and reported >= max(nodes, self.expected),
                "nodes_reported": reported, "nodes": nodes,
                "nodes_expected": max(self.expected, nodes),
                "query_seconds": self.query_seconds}

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

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> list[Message]:
        """The wrapped grid's ``send_and_receive``, replies in partition order.

        Reply arrival order varies from run to run; sorted by their senders' partition
        (unknown nodes last, by id), aggregation sums in the same order in every run.
        """
        replies = self._grid.send_and_receive(messages, timeout=timeout)

        def key(reply: Message) -> tuple[float, int]:
            node_id = reply.metadata.src_node_id
            return (self.partitions.get(node_id, float("inf")), node_id)

        return sorted(replies, key=key)

    # ---- the rest of the Grid interface: the wrapped grid's --------------------------
    def set_run(self, run: Run) -> None:
        """The wrapped grid's."""
        self._grid.set_run(run)

    @property
    def run(self) -> Run:
        """The wrapped grid's."""
        return self._grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        """The wrapped grid's (deprecated in Flower)."""
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_nodes(self) -> Iterable[NodeInfo]:
        """The wrapped grid's."""
        return self._grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """The wrapped grid's."""
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The wrapped grid's."""
        return self._grid.pull_messages(message_ids)


def unseeded_problem(node_ids: Sequence[int], partitions: Mapping[int, int],
                     expected: int) -> str | None:
    """Why client sampling cannot follow the seed (missing or silent nodes), or ``None``."""
    silent = sorted(node for node in node_ids if node not in partitions)
    problems = []
    if len(node_ids) < expected:
        problems.append(f"only {len(node_ids)} of the {expected} nodes (num_clients) are "
                        "connected")
    if silent:
        shown = ", ".join(str(node) for node in silent[:10])
        problems.append(f"{len(silent)} of {len(node_ids)} nodes did not report their "
                        f"partition id (nodes {shown}{' ...' if len(silent) > 10 else ''})")
    return "; ".join(problems) or None


def partition_ordered_grid(grid: Grid, timeout: float, *, expected: int = 0,
                           allow_unseeded: bool = True) -> PartitionOrderedGrid:
    """Ask every connected node for its partition id; the grid in partition order.

    The log line "N nodes reported their partition id." is what
    ``scripts/backfill_sampling.py`` reads from runs recorded before
    ``summary.sampling`` existed: keep its wording.

    Parameters
    ----------
    grid : Grid
        The real grid.
    timeout : float
        Longest wait for the partition ids (``round_timeout``), re-asking silent nodes.
    expected : int (default: 0)
        The nodes the run needs (``num_clients``).
    allow_unseeded : bool (default: True)
        Go on, with a warning, if nodes are missing or silent (else raise).

    Raises
    ------
    SamplingError
        If sampling cannot follow the seed and ``allow_unseeded`` is false.
    """
    started = time.perf_counter()
    node_ids = list(grid.get_node_ids())
    partitions = query_partition_ids(grid, node_ids, timeout=timeout)
    log(INFO, "%d nodes reported their partition id.", len(partitions))
    problem = unseeded_problem(node_ids, partitions, expected)
    if problem is not None and not allow_unseeded:
        raise SamplingError(
            f"Client sampling cannot follow the seed: {problem} within round_timeout="
            f"{timeout:g} s. Check that every SuperNode runs this package's ClientApp (it "
            "answers `query` messages) and is not overloaded, or raise round_timeout; or "
            "set allow_unseeded_sampling=true (run config: allow-unseeded-sampling=true) "
            "to go on with unseeded sampling (summary.sampling.seeded = false: "
            "fedrdskd-report will not pair this run with others).")
    if problem is not None:
        log(WARNING, "%s: client sampling does not follow the seed "
            "(summary.sampling.seeded = false), so fedrdskd-report will not pair this run "
            "with others.", problem[0].upper() + problem[1:])
    return PartitionOrderedGrid(grid, partitions, queried=node_ids, expected=expected,
                                query_seconds=time.perf_counter() - started)
