"""The in-process Grid answers through Flower's push / pull calls as through send_and_receive."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from flwr.app import Message, MessageType, RecordDict

from fedrdskd.inprocess import FIRST_CLIENT_NODE_ID, InProcessGrid
from fedrdskd.protocol import NODE_INFO_KEY, PARTITION_ID_KEY


@pytest.fixture(autouse=True)
def _server_identity(server_task_identity):
    """Messages are built as a ServerApp would build them."""


def queries(node_ids) -> list[Message]:
    return [Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY)
            for node in node_ids]


def partition_ids(replies) -> list[int]:
    return [reply.content[NODE_INFO_KEY][PARTITION_ID_KEY] for reply in replies]


def test_pushed_messages_are_pulled_once_each():
    with ThreadPoolExecutor(max_workers=1) as executor:
        grid = InProcessGrid(settings=None, num_nodes=3, executor=executor)
        nodes = [FIRST_CLIENT_NODE_ID + 2, FIRST_CLIENT_NODE_ID]
        message_ids = list(grid.push_messages(queries(nodes)))
        assert len(set(message_ids)) == 2
        executor.shutdown(wait=True)  # every answer is ready
        replies = list(grid.pull_messages(message_ids))
        assert sorted(partition_ids(replies)) == [0, 2]
        assert list(grid.pull_messages(message_ids)) == []  # each reply is returned once


def test_send_and_receive_keeps_message_order():
    with ThreadPoolExecutor(max_workers=2) as executor:
        grid = InProcessGrid(settings=None, num_nodes=3, executor=executor)
        nodes = [FIRST_CLIENT_NODE_ID + index for index in (1, 0, 2)]
        assert partition_ids(grid.send_and_receive(queries(nodes))) == [1, 0, 2]
