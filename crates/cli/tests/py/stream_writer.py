"""A Greengrass component using the Stream Manager SDK as the developer guide shows: the
port from IPC GetConfiguration(aws.greengrass.StreamManager, ["port"]), the token from the
environment. Appends to stream D without end, logging each acknowledged append to
acked.log (in its work directory). At start it first reads back every message already in D
into readback-<pid>.json, so the test can compare it with what was acknowledged before a
kill -9 of the core."""
import json
import os
import time

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from stream_manager import (MessageStreamDefinition, ReadMessagesOptions, StrategyOnFull,
                            StreamManagerClient)
from stream_manager.exceptions import InvalidRequestException, NotEnoughMessagesException

ipc = GreengrassCoreIPCClientV2()
port = ipc.get_configuration(component_name="aws.greengrass.StreamManager", key_path=["port"]).value["port"]
client = StreamManagerClient(port=int(port))
try:
    client.create_message_stream(MessageStreamDefinition(name="D", strategy_on_full=StrategyOnFull.RejectNewData))
except InvalidRequestException:
    pass  # exists from the previous run
seen = []
start = 0
while True:
    try:
        batch = client.read_messages("D", ReadMessagesOptions(desired_start_sequence_number=start,
                                                             min_message_count=1, max_message_count=500))
    except NotEnoughMessagesException:
        break
    seen += [[m.sequence_number, m.payload.decode()] for m in batch]
    start = batch[-1].sequence_number + 1
with open(f"readback-{os.getpid()}.json.tmp", "w") as f:
    json.dump(seen, f)
os.rename(f"readback-{os.getpid()}.json.tmp", f"readback-{os.getpid()}.json")
log = open("acked.log", "a")
i = 0
while True:
    payload = f"{os.getpid()}-{i}"
    seq = client.append_message("D", payload.encode())
    log.write(f"{seq} {payload}\n")
    log.flush()
    i += 1
    if i % 50 == 0:
        time.sleep(0.01)
