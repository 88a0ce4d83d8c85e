"""Connects to the cloud's device endpoint over mTLS with a bundle's files and reports.

usage: mqtt_connect.py HOST PORT CA CERT KEY CLIENT_ID
prints "connected" (exit 0) or "refused: …" (exit 1).
"""
import ssl
import sys
import threading

import paho.mqtt.client as mqtt

host, port, ca, cert, key, client_id = sys.argv[1:7]
done = threading.Event()
result = {}


def on_connect(client, userdata, flags, reason_code, properties):
    result["rc"] = str(reason_code)
    result["ok"] = not reason_code.is_failure
    done.set()


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
client.tls_set(ca_certs=ca, certfile=cert, keyfile=key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
client.on_connect = on_connect
try:
    client.connect(host, int(port), keepalive=10)
    client.loop_start()
    done.wait(10)
    client.loop_stop()
except Exception as e:  # TLS refusal surfaces here
    print(f"refused: {e}")
    sys.exit(1)
if result.get("ok"):
    print("connected")
    client.disconnect()
    sys.exit(0)
print(f"refused: {result.get('rc', 'no CONNACK')}")
sys.exit(1)
