"""UpdateThingShadow through awsiotsdk's GreengrassCoreIPCClientV2, sequentially, for
shadow_bench.rs (which sets SVCUID and the socket path as the core does for a component).

Usage: shadow_bench_sdk.py N   — prints one line: count, rate, p50, p99.
"""
import json
import sys
import time

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

N = int(sys.argv[1])
ipc = GreengrassCoreIPCClientV2()


def body(n):
    return json.dumps(
        {"state": {"reported": {"n": n, "temperature": 21.5, "status": "nominal", "fw": "1.2.3"}}}
    ).encode()


for n in range(50):
    ipc.update_thing_shadow(thing_name="sdk-thing", payload=body(n))
lat = []
t0 = time.perf_counter()
for n in range(N):
    t = time.perf_counter()
    ipc.update_thing_shadow(thing_name="sdk-thing", payload=body(n))
    lat.append(time.perf_counter() - t)
secs = time.perf_counter() - t0
lat.sort()
p = lambda q: lat[round((len(lat) - 1) * q)] * 1000
print(
    "awsiotsdk ipc, 1 client: %d updates in %.2f s = %.0f/s, p50 %.2f ms, p99 %.2f ms"
    % (N, secs, N / secs, p(0.5), p(0.99))
)
ipc.close()
