//! The AWS IoT Jobs MQTT API (in progress).
