//! vigil-bench: load and keep-alive soak scenarios that measure any MQTT broker.
