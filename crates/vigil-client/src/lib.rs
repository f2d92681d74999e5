//! vigil-client: an async MQTT client on the vigil-proto codec and client session.
