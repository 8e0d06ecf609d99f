"""A federation in one machine without Ray: the real ServerApp rounds, the real ClientApp handlers.

:class:`InProcessGrid` is a Flower ``Grid`` whose nodes are this package's ClientApp
handlers (:func:`~fedrdskd.clients.client_app.handle_train`, ``handle_evaluate``,
``handle_query``) run in worker processes. :func:`run_in_process` drives the ServerApp's
own :func:`~fedrdskd.server_app.run_server` with it, so sampling, seeding, aggregation,
distillation, diagnostics and ``results.json`` are exactly those of a Ray simulation of
the same config; each client trains with ``client.num_cpus`` torch threads as under Ray,
so a run reproduces the simulation's numbers (``tests/test_simulation.py`` checks it
against a Ray run). It skips Ray's start-up and per-round overhead, which makes it the
tool for research loops and benchmarks on small machines
(``benchmarks/distillation_gain.py``).
"""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path

from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from fedrdskd.clients.client_app import (
    handle_candidates,
    handle_evaluate,
    handle_query,
    handle_train,
)
from fedrdskd.experiment import ClientSettings, ExperimentConfig
from fedrdskd.protocol import CANDIDATES_MESSAGE_TYPE, NUM_PARTITIONS_KEY, PARTITION_ID_KEY

SERVER_NODE_ID = 1
RUN_ID = 1
FIRST_CLIENT_NODE_ID = 2


def partition_of_node(node_id: int) -> int:
    """The partition an :class:`InProcessGrid` node holds (node ids start after the server's)."""
    return node_id - FIRST_CLIENT_NODE_ID


def node_context(node_id: int, partition_id: int, num_partitions: int) -> Context:
    """The context a SuperNode of partition ``partition_id`` gives its ClientApp."""
    return Context(run_id=RUN_ID, node_id=node_id,
                   node_config={PARTITION_ID_KEY: partition_id,
                                NUM_PARTITIONS_KEY: num_partitions},
                   state=RecordDict(), run_config={})


def handle_message(message: Message, settings: ClientSettings, partition_id: int,
                   num_partitions: int) -> Message:
    """Answer one message as the ClientApp of that node would."""
    context = node_context(message.metadata.dst_node_id, partition_id, num_partitions)
    kind = message.metadata.message_type
    if kind == MessageType.TRAIN:
        return handle_train(message, context, settings)
    if kind == MessageType.EVALUATE:
        return handle_evaluate(message, context, settings)
    if kind == MessageType.QUERY:
        return handle_query(message, context)
    if kind == CANDIDATES_MESSAGE_TYPE:
        return handle_candidates(message, context, settings)
    raise ValueError(f"InProcessGrid cannot answer messages of type {kind!r}.")


class InProcessGrid(Grid):
    """A Grid of ``num_nodes`` ClientApp nodes answered by a process pool.

    Node ``FIRST_CLIENT_NODE_ID + i`` holds partition ``i`` (1 is the server's id).

    Parameters
    ----------
    settings : ClientSettings
        The clients' data, partition and model settings.
    num_nodes : int
        Nodes (= partitions).
    executor : concurrent.futures.Executor
        Runs :func:`handle_message`; a process pool of as many workers as Ray would run
        clients in parallel.
    """

    def __init__(self, settings: ClientSettings, num_nodes: int, executor: Executor) -> None:
        self.settings = settings
        self.num_nodes = num_nodes
        self.executor = executor
        self.partitions = {FIRST_CLIENT_NODE_ID + partition: partition
                           for partition in range(num_nodes)}
        self._pending: dict[str, Future] = {}

    def set_run(self, run) -> None:  # noqa: D102 - no run bookkeeping in one process
        self._run = run

    @property
    def run(self):  # noqa: D102
        return getattr(self, "_run", None)

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        """A message to ``dst_node_id`` (deprecated in Flower, kept for the interface)."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        """The node ids, in partition order."""
        return list(self.partitions)

    def get_nodes(self) -> list:
        """Node infos are not modelled in one process."""
        return []

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Hand each message to the pool; return their message ids."""
        message_ids = []
        for message in messages:
            message_id = uuid.uuid4().hex
            message.metadata.__dict__["_message_id"] = message_id
            partition = self.partitions[message.metadata.dst_node_id]
            self._pending[message_id] = self.executor.submit(
                handle_message, message, self.settings, partition, self.num_nodes)
            message_ids.append(message_id)
        return message_ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies to those of ``message_ids`` that are answered (each returned once)."""
        ready = [message_id for message_id in message_ids
                 if message_id in self._pending and self._pending[message_id].done()]
        return [self._pending.pop(message_id).result() for message_id in ready]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> list[Message]:
        """Answer every message through the pool; replies in message order."""
        message_ids = list(self.push_messages(messages))
        return [self._pending.pop(message_id).result() for message_id in message_ids]


def run_in_process(experiment: ExperimentConfig, output_dir: Path, *,
                   workers: int = 2) -> dict:
    """Run the experiment's ServerApp against in-process clients; return its summary.

    Parameters
    ----------
    experiment : ExperimentConfig
        Validated settings (as the Hydra CLI builds them).
    output_dir : Path
        Where ``results.json``, ``checkpoint.pt`` and the plots go.
    workers : int (default: 2)
        Client processes training in parallel (Ray runs one client per
        ``client.num_cpus`` CPUs).
    """
    from fedrdskd.server_app import run_server

    identity = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, RUN_ID, SERVER_NODE_ID
    context = multiprocessing.get_context("forkserver")
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as executor:
            grid = InProcessGrid(experiment.client, experiment.num_clients, executor)
            return run_server(grid, experiment, Path(output_dir))
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = identity
