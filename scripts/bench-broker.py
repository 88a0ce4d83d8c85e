"""Side-by-side MQTT broker benchmark: lichen vs its peers, one after the other, same load.

Peers: mosquitto with its defaults, mosquitto with max_inflight_messages equal to the load
generator's QoS 1 window (64), rumqttd (if scripts/bench-broker could install it), and
optionally an earlier lichen build (--baseline PATH). Prints, per scenario and broker: delivered
messages/s, delivered %, p50/p99 latency, peak RSS and CPU seconds of the broker process, and
lichen's ratio to each peer. Run via scripts/bench-broker.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LICHEN = os.path.join(ROOT, "target/release/lichen-broker")
LOAD = os.path.join(ROOT, "target/release/examples/mqtt_load")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
RUMQTTD = os.environ.get("RUMQTTD", os.path.expanduser("~/.cache/lichen-bench/bin/rumqttd"))
# The load generator's QoS 1 window per publisher (crates/broker/examples/mqtt_load.rs).
LOAD_WINDOW = 64
BASELINE = None  # path of an earlier lichen-broker, set by --baseline
NCPU = os.cpu_count() or 1
BROKER_CPU = "0"
LOAD_CPU = "1" if NCPU > 1 else "0"
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"broker did not open port {port}")


def make_certs(workdir):
    """A CA, a server certificate (localhost) and a client certificate, with openssl."""
    d = os.path.join(workdir, "certs")
    os.makedirs(d, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def sh(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    sh("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench-ca")
    for name, ext in (("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext + "\n")
        sh("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={'localhost' if name == 'server' else 'idle-device'}")
        sh("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
           "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return d


class Broker:
    def __init__(self, kind, workdir, certs=None):
        self.kind, self.port = kind, free_port()
        self.client_ca = None
        if kind in ("lichen", "lichen-base"):
            state = os.path.join(workdir, f"lichen-{self.port}")
            listener = {"kind": "tls" if certs else "tcp", "bind": f"127.0.0.1:{self.port}"}
            cfg = {
                "state_dir": state,
                "listeners": [listener],
                "device_groups": {
                    "formatVersion": "2021-03-05",
                    "definitions": {"all": {"selectionRule": "thingName: *", "policyName": "all"}},
                    "policies": {"all": {"all": {"operations": ["*"], "resources": ["*"]}}},
                },
            }
            if certs:
                with open(os.path.join(certs, "ca.pem")) as f:
                    cfg["tls"] = {"trusted_ca_pems": [f.read()]}
                self.client_ca = os.path.join(state, "ca.pem")
            path = os.path.join(workdir, f"lichen-{self.port}.json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            cmd = [LICHEN if kind == "lichen" else BASELINE, path]
        elif kind == "rumqttd":
            # rumqttd's own demo configuration (rumqttd.toml), on one v4 listener, with the
            # in-flight window of the load generator and no accept throttling.
            path = os.path.join(workdir, f"rumqttd-{self.port}.toml")
            with open(path, "w") as f:
                f.write(f"""id = 0
[router]
id = 0
max_connections = 20010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:{self.port}"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = {LOAD_WINDOW}
    dynamic_filters = true
""")
            cmd = [RUMQTTD, "-q", "-c", path]
        else:
            path = os.path.join(workdir, f"mosquitto-{self.port}.conf")
            with open(path, "w") as f:
                f.write(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n")
                if kind == "mosquitto-w64":
                    f.write(f"max_inflight_messages {LOAD_WINDOW}\n")
                if certs:
                    # `user root`: keep read access to the key in our private temp dir (no effect on speed).
                    f.write(f"cafile {certs}/ca.pem\ncertfile {certs}/server.pem\nkeyfile {certs}/server.key\nrequire_certificate true\n")
                    if os.geteuid() == 0:
                        f.write("user root\n")
                    self.client_ca = os.path.join(certs, "ca.pem")
            cmd = [MOSQUITTO, "-c", path]
        self.proc = subprocess.Popen(["taskset", "-c", BROKER_CPU] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def status(self, key):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def cpu(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def load(port, args, timeout):
    cmd = ["taskset", "-c", LOAD_CPU, LOAD, "--port", str(port)] + args
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"mqtt_load failed: {out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_flow(kind, workdir, args, duration):
    b = Broker(kind, workdir)
    try:
        cpu0 = b.cpu()
        r = load(b.port, args + ["--duration", str(duration)], duration * 4 + 60)
        r["cpu_s"] = b.cpu() - cpu0
        r["peak_rss"] = b.status("VmHWM")
    finally:
        b.stop()
    return r


def run_idle(kind, workdir, conns, hold=6, certs=None):
    b = Broker(kind, workdir, certs)
    try:
        time.sleep(0.5)
        rss0 = b.status("VmRSS")
        cpu0 = b.cpu()
        extra = []
        if certs:
            extra = ["--cafile", b.client_ca, "--cert", os.path.join(certs, "client.pem"), "--key", os.path.join(certs, "client.key")]
        p = subprocess.Popen(["taskset", "-c", LOAD_CPU, LOAD, "--port", str(b.port), "--scenario", "idle", "--conns", str(conns), "--hold", str(hold)] + extra,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = p.stdout.readline().split()
        if not line or line[0] != "ready":
            raise RuntimeError(f"idle connections failed: {p.stderr.read()}")
        time.sleep(2)
        rss1 = b.status("VmRSS")
        r = {"conns": int(line[1]), "connect_secs": float(line[2]), "rss_before": rss0, "rss_after": rss1,
             "per_conn": (rss1 - rss0) / max(1, int(line[1])), "peak_rss": b.status("VmHWM"), "cpu_s": b.cpu() - cpu0}
        p.wait(hold + 30)
    finally:
        b.stop()
    return r


SCENARIOS = [
    ("qos0-4pairs", ["--scenario", "pairs", "--pubs", "4", "--qos", "0"], "max rate"),
    ("qos1-4pairs", ["--scenario", "pairs", "--pubs", "4", "--qos", "1"], "max rate"),
    ("qos1-fanin-8to1", ["--scenario", "fanin", "--pubs", "8", "--qos", "1"], "max rate"),
    ("qos0-fanout-1to8", ["--scenario", "fanout", "--subs", "8", "--qos", "0"], "max rate"),
    ("qos1-fanout-1to8", ["--scenario", "fanout", "--subs", "8", "--qos", "1"], "max rate"),
    ("latency-qos0-4pairs-20k", ["--scenario", "pairs", "--pubs", "4", "--qos", "0", "--rate", "20000"], "fixed 20,000 msg/s"),
    ("latency-qos1-4pairs-20k", ["--scenario", "pairs", "--pubs", "4", "--qos", "1", "--rate", "20000"], "fixed 20,000 msg/s"),
]


def median_run(rs):
    """Per-metric median over repeated runs."""
    out = dict(rs[0])
    for key in ("recv_per_sec", "delivered_pct", "p50_us", "p99_us", "peak_rss", "cpu_s", "received"):
        vals = sorted(r[key] for r in rs)
        out[key] = vals[len(vals) // 2]
    return out


def fmt_bytes(n):
    return f"{n / 1048576:.1f} MiB"


def ratio(a, b):
    return f"{a / b:.2f}x" if b else "n/a"


def peers_available(wanted):
    out = []
    for k in wanted:
        if k == "rumqttd" and not os.access(RUMQTTD, os.X_OK):
            print(f"skipping rumqttd: {RUMQTTD} is not installed (scripts/bench-broker installs it)")
            continue
        out.append(k)
    return out


def print_table(name, mode, res):
    print(f"== {name} ({mode})")
    print(f"   {'broker':<14} {'msgs/s':>10} {'delivered':>10} {'p50':>10} {'p99':>10} {'peak RSS':>10} {'CPU s':>7}")
    for k, r in res.items():
        print(f"   {k:<14} {r['recv_per_sec']:>10,.0f} {r['delivered_pct']:>9.2f}% {r['p50_us']/1000:>8.2f}ms {r['p99_us']/1000:>8.2f}ms {fmt_bytes(r['peak_rss']):>10} {r['cpu_s']:>7.2f}")
    l = res["lichen"]
    for k, m in res.items():
        if k == "lichen":
            continue
        print(f"   ratio lichen/{k}: msgs/s {ratio(l['recv_per_sec'], m['recv_per_sec'])}, p99 {ratio(l['p99_us'], m['p99_us'])}, "
              f"peak RSS {ratio(l['peak_rss'], m['peak_rss'])}, CPU/msg {ratio(l['cpu_s'] / max(1, l['received']), m['cpu_s'] / max(1, m['received']))}")
    print()


def print_idle(title, res):
    print(f"== {title}")
    for k, r in res.items():
        print(f"   {k:<14} {r['per_conn']:>8.0f} B/connection (RSS {fmt_bytes(r['rss_before'])} -> {fmt_bytes(r['rss_after'])}), peak {fmt_bytes(r['peak_rss'])}, CPU {r['cpu_s']:.2f} s")
    for k, r in res.items():
        if k != "lichen":
            print(f"   ratio lichen/{k}: per-connection memory {ratio(res['lichen']['per_conn'], r['per_conn'])}")
    print()


def main():
    global BASELINE
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--only", default=None, help="substring of scenario names to run")
    ap.add_argument("--conns", type=int, default=5000)
    ap.add_argument("--json", default=None, help="also write raw results here")
    ap.add_argument("--repeat", type=int, default=3, help="runs per broker (alternating); medians are printed")
    ap.add_argument("--peers", default="mosquitto,mosquitto-w64,rumqttd",
                    help="comma-separated peers: mosquitto, mosquitto-w64, rumqttd")
    ap.add_argument("--baseline", default=None, help="an earlier lichen-broker binary to compare with (as lichen-base)")
    a = ap.parse_args()
    BASELINE = a.baseline
    kinds = ["lichen"] + (["lichen-base"] if BASELINE else []) + peers_available([p for p in a.peers.split(",") if p])
    mver = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True).stdout.splitlines()[0:1]
    print(f"machine: {os.uname().sysname} {os.uname().release}, {NCPU} CPUs ({cpu_model()}); broker on CPU {BROKER_CPU}, load on CPU {LOAD_CPU}")
    print(f"peers: {', '.join(kinds[1:])}")
    print(f"  mosquitto: {mver[0] if mver else MOSQUITTO} (defaults: max_inflight_messages 20, max_queued_messages 1000); "
          f"mosquitto-w64: the same with max_inflight_messages {LOAD_WINDOW}")
    if "rumqttd" in kinds:
        print(f"  rumqttd: {RUMQTTD} (its demo router settings, max_inflight_count {LOAD_WINDOW})")
    if BASELINE:
        print(f"  lichen-base: {BASELINE}")
    print(f"load: MQTT 3.1.1, 64-byte payloads, QoS 1 window {LOAD_WINDOW} per publisher, {a.duration:g} s per run, "
          f"median of {a.repeat} alternating runs per broker\n")
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for name, args, mode in SCENARIOS:
            if a.only and a.only not in name:
                continue
            runs = {k: [] for k in kinds}
            for _ in range(a.repeat):
                for k in kinds:
                    runs[k].append(run_flow(k, work, args, a.duration))
            res = {k: median_run(v) for k, v in runs.items()}
            results[name] = {"median": res, "runs": runs}
            print_table(name, mode, res)
        if not a.only or "idle" in a.only:
            res = {k: run_idle(k, work, a.conns) for k in kinds}
            results["idle"] = res
            print_idle(f"idle connections: {a.conns}", res)
            certs = make_certs(work)
            tls_kinds = [k for k in kinds if k != "rumqttd"]
            res = {k: run_idle(k, work, a.conns, certs=certs) for k in tls_kinds}
            results["idle-mtls"] = res
            print_idle(f"idle connections over mTLS: {a.conns} (rumqttd not configured for mTLS here)", res)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
