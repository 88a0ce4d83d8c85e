"""A component whose Startup step never exits: it becomes RUNNING only because it reports
UpdateState(RUNNING) over IPC (after a delay), then keeps running."""

import time

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model

ipc = GreengrassCoreIPCClientV2()
time.sleep(1.5)
ipc.update_state(state=model.ReportedLifecycleState.RUNNING)
print("reported RUNNING", flush=True)
while True:
    time.sleep(3600)
