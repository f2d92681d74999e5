//! Sizes the process's descriptor table once, before the first accept.
//!
//! Linux grows a process's descriptor table by doubling it when a new
//! descriptor does not fit, and in a process with more than one thread each
//! growth waits for an RCU grace period (`synchronize_rcu` in
//! `expand_files`) inside the call that needed the slot: here `accept4` on
//! the worker thread, which then answers nobody for 10–25 ms on these
//! machines. A storm of 5,000 connections grew the table seven times (64 to
//! 8,192 slots) and held PINGRESPs for clients already connected up to 35 ms
//! (Mosquitto, single-threaded, never pays the wait). Growing the table once
//! at start moves that wait out of the serving path. The table is kernel
//! memory, 8 bytes a slot, and Linux never shrinks it anyway.

use std::os::fd::AsFd;

use tracing::{debug, warn};

/// Grows the descriptor table to hold `slots` descriptors (capped by the
/// process's descriptor limit), by duplicating `fd` to the highest of them
/// and closing the copy. Returns the number of slots reserved.
pub(crate) fn reserve(fd: impl AsFd, slots: usize) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let slots = capped(slots, limit);
    if slots <= 1 {
        return 0;
    }
    match rustix::io::fcntl_dupfd_cloexec(fd, slots - 1) {
        Ok(copy) => {
            drop(copy);
            debug!(slots, "descriptor table sized before the first accept");
            slots as usize
        }
        Err(e) => {
            // Only latency is at stake: the table still grows on demand.
            warn!(slots, error = %e, "could not size the descriptor table in advance");
            0
        }
    }
}

/// `slots` within the descriptor limit (None: unlimited) and a descriptor's range.
fn capped(slots: usize, limit: Option<u64>) -> i32 {
    (slots as u64)
        .min(limit.unwrap_or(u64::MAX))
        .min(i32::MAX as u64) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_size() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn limit() -> usize {
        rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX)
            .min(i32::MAX as u64) as usize
    }

    #[tokio::test]
    async fn binding_a_server_sizes_the_table_for_its_connections() {
        let mut config = crate::config::BrokerConfig::default();
        config.listener.bind = "127.0.0.1".parse().unwrap();
        config.listener.port = 0;
        config.listener.max_connections = 5000;
        let _server = crate::Server::bind(crate::ServerOptions::from_config(&config))
            .await
            .unwrap();
        // No other test here grows the table past 1,024 slots (the one
        // below stays under it on purpose): without the reservation it would
        // be a few hundred.
        assert!(table_size() >= 5064.min(limit()), "FDSize {}", table_size());
    }

    fn highest_open_fd() -> i32 {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .max()
            .unwrap()
    }

    #[test]
    fn the_table_holds_the_reserved_slots_and_no_descriptor_is_left_open() {
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let before = highest_open_fd();
        // Small enough that the kernel's rounding keeps the table within
        // 1,024 slots, so the bind test above can still tell.
        let want = (before as usize + 300).min(limit()).min(1000);
        assert_eq!(reserve(&file, want), want);
        // The copy at want - 1 was closed again.
        assert!(highest_open_fd() < want as i32 - 1);
        assert!(table_size() >= want, "FDSize {} < {want}", table_size());
    }

    #[test]
    fn a_request_beyond_the_limit_is_capped_not_refused() {
        assert_eq!(capped(100_064, Some(20_000)), 20_000);
        assert_eq!(capped(1_000, Some(20_000)), 1_000);
        assert_eq!(capped(usize::MAX, None), i32::MAX);
    }
}
