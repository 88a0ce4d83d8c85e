"""onnxruntime's side of the ML benchmark: same model, same input, same threads.

usage: bench_ort.py MODEL.onnx INPUT.npy RUNS CONCURRENCY
Prints one JSON line: p50/p99 latency (µs) of single requests on one thread, throughput
(inferences/s) with CONCURRENCY threads each running its own requests on one shared session
(intra-op threads 1, so CONCURRENCY threads in all), and the RSS the session added (KiB).
"""
import json
import sys
import threading
import time

import numpy as np
import onnxruntime as ort


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    path, inp, runs, conc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    x = np.load(inp)
    before = rss_kib()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for _ in range(5):
        sess.run(None, {name: x})
    after = rss_kib()
    lat = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: x})
        lat.append((time.perf_counter() - t) * 1e6)
    lat.sort()
    per = max(1, runs // conc)

    def worker():
        for _ in range(per):
            sess.run(None, {name: x})

    threads = [threading.Thread(target=worker) for _ in range(conc)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    print(json.dumps({
        "p50_us": lat[len(lat) // 2],
        "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "throughput_per_s": per * conc / elapsed,
        "rss_kib": after - before,
    }))


if __name__ == "__main__":
    main()
