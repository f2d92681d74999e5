//! vigil-store: persistence for the broker (sessions, queued messages, retained
//! messages, pending wills). Filled in by the durability work.
