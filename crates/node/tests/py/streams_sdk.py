"""Drives the stream manager with the real Stream Manager SDK (stream-manager 1.1.2): every
operation and every status code it can reach. Prints one JSON object of results."""
import json
import os
import sys
import threading
import time

from stream_manager import (
    ExportDefinition, HTTPConfig, MessageStreamDefinition, Persistence, ReadMessagesOptions,
    StrategyOnFull, StreamManagerClient,
)
from stream_manager.exceptions import StreamManagerException

port = int(sys.argv[1])
out = {}


def code(fn):
    try:
        fn()
        return 0
    except StreamManagerException as e:
        status = e.status.value if hasattr(e.status, "value") else e.status
        return [type(e).__name__, status]
    except Exception as e:  # noqa: BLE001 - reported to the test
        return [type(e).__name__, None]


c = StreamManagerClient(port=port)
out["list_empty"] = c.list_streams()
d1 = MessageStreamDefinition(name="S1", max_size=1024, stream_segment_size=1024,
                             strategy_on_full=StrategyOnFull.RejectNewData, persistence=Persistence.File)
c.create_message_stream(d1)
out["create_duplicate"] = code(lambda: c.create_message_stream(d1))
out["seqs"] = [c.append_message("S1", bytes([i]) * 100) for i in range(8)]
out["append_full"] = code(lambda: c.append_message("S1", b"x" * 100))
msgs = c.read_messages("S1", ReadMessagesOptions(desired_start_sequence_number=0, min_message_count=3,
                                                   max_message_count=5, read_timeout_millis=0))
out["read"] = [[m.stream_name, m.sequence_number, m.payload == bytes([m.sequence_number]) * 100,
                isinstance(m.payload, bytes), m.ingest_time > 1_600_000_000_000] for m in msgs]
out["read_default"] = [m.sequence_number for m in c.read_messages("S1")]
out["read_not_enough"] = code(lambda: c.read_messages("S1", ReadMessagesOptions(min_message_count=20, max_message_count=20)))
info = c.describe_message_stream("S1")
out["describe"] = [info.storage_status.oldest_sequence_number, info.storage_status.newest_sequence_number,
                   info.storage_status.total_bytes, info.definition.name, info.definition.max_size,
                   info.definition.strategy_on_full.value, info.definition.persistence.value,
                   info.export_definition_kinesis if hasattr(info, "export_definition_kinesis") else
                   info.definition.export_definition.kinesis]

# Long polls: one satisfied by an append made while it waits, one that runs out.
c.create_message_stream(MessageStreamDefinition(name="S2", strategy_on_full=StrategyOnFull.OverwriteOldestData,
                                                persistence=Persistence.Memory))
got = {}


def poll():
    t = time.time()
    m = c.read_messages("S2", ReadMessagesOptions(desired_start_sequence_number=0, min_message_count=2,
                                                  max_message_count=10, read_timeout_millis=5000))
    got["seqs"] = [x.sequence_number for x in m]
    got["elapsed"] = time.time() - t


th = threading.Thread(target=poll)
th.start()
time.sleep(0.5)
c.append_message("S2", b"a")
time.sleep(0.3)
c.append_message("S2", b"b")
th.join()
out["long_poll"] = [got["seqs"], got["elapsed"]]
t = time.time()
out["long_poll_timeout"] = code(lambda: c.read_messages("S2", ReadMessagesOptions(
    desired_start_sequence_number=10, min_message_count=1, read_timeout_millis=1000)))
out["long_poll_timeout_elapsed"] = time.time() - t
out["read_clamped"] = [m.sequence_number for m in c.read_messages("S2", ReadMessagesOptions(
    desired_start_sequence_number=0, min_message_count=1, max_message_count=5))]

# Updates.
d1b = MessageStreamDefinition(name="S1", max_size=4096, stream_segment_size=1024,
                              strategy_on_full=StrategyOnFull.RejectNewData, persistence=Persistence.File,
                              export_definition=ExportDefinition(http=[HTTPConfig(identifier="h1", uri="https://example.invalid/")]))
c.update_message_stream(d1b)
out["append_after_update"] = c.append_message("S1", b"y" * 100)
out["update_persistence"] = code(lambda: c.update_message_stream(MessageStreamDefinition(
    name="S1", max_size=4096, stream_segment_size=1024, strategy_on_full=StrategyOnFull.RejectNewData,
    persistence=Persistence.Memory)))
out["update_too_small"] = code(lambda: c.update_message_stream(MessageStreamDefinition(
    name="S1", max_size=1024, stream_segment_size=1024, strategy_on_full=StrategyOnFull.RejectNewData)))
info = c.describe_message_stream("S1")
out["export_statuses"] = [[s.export_config_identifier, s.last_exported_sequence_number] for s in info.export_statuses]

# Missing streams.
out["describe_missing"] = code(lambda: c.describe_message_stream("nope"))
out["delete_missing"] = code(lambda: c.delete_message_stream("nope"))
out["append_missing"] = code(lambda: c.append_message("nope", b"x"))
out["read_missing"] = code(lambda: c.read_messages("nope"))
out["update_missing"] = code(lambda: c.update_message_stream(MessageStreamDefinition(
    name="nope", strategy_on_full=StrategyOnFull.RejectNewData)))

# Oversized append (above the 16 MiB frame bound), then the connection still works.
out["append_oversized"] = code(lambda: c.append_message("S2", b"z" * (17 * 1024 * 1024)))
out["after_oversized"] = c.append_message("S2", b"c")

c.delete_message_stream("S2")
out["list_after_delete"] = sorted(c.list_streams())
c.close()

# A wrong token: the connection is refused.
os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = "not-a-token"
out["wrong_token"] = code(lambda: StreamManagerClient(port=port, connect_timeout=3))
del os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
out["no_token"] = code(lambda: StreamManagerClient(port=port, connect_timeout=3))
print(json.dumps(out))
