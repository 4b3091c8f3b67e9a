//! Free loopback ports, for the servers a test starts that bind by number
//! (nats-server, PostgreSQL, loket's own binaries).
//!
//! A port the kernel picks for a `bind` to port 0 comes from its ephemeral
//! range, which outgoing connections draw from too: released, it may be some
//! test's connection to PostgreSQL a moment later, before the server it was
//! meant for binds it (seen: a simulator that could not bind its port while
//! other tests ran). So ports are drawn at random from below that range,
//! where only explicit binds land, and each is claimed for the life of the
//! test process by a lock on a file named after it: tests running side by
//! side in other processes never get the same port, nor does a later call
//! in this one. The lock goes with the process, however it ends; the files
//! stay (empty, one per port ever handed out), as deleting one could let two
//! processes lock two files of the same name.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher as _, RandomState};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;

/// The lowest port handed out.
const LOWEST: u16 = 10_000;

/// The claim files of the ports this process was given, kept open (and so
/// locked) until it exits.
static CLAIMED: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A loopback port no other test holds, free a moment ago.
pub fn free_port() -> u16 {
    let below = ephemeral_range_start();
    if below <= LOWEST + 1_000 {
        // No room below the ephemeral range: the kernel's pick will do.
        return kernel_pick();
    }
    let randomness = RandomState::new();
    let span = u64::from(below - LOWEST);
    for attempt in 0u32..10_000 {
        let port = LOWEST + (randomness.hash_one(attempt) % span) as u16;
        if claim(port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOWEST} and {below}");
}

/// The first port of the kernel's ephemeral range (32768 when unreadable,
/// Linux's default).
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn kernel_pick() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// Whether this process now holds `port`'s claim (false when another
/// process, or an earlier call of this one, does).
fn claim(port: u16) -> bool {
    let folder = claims_folder();
    let file = std::fs::create_dir_all(&folder).and_then(|()| {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(folder.join(port.to_string()))
    });
    let file = file.unwrap_or_else(|error| panic!("a claim file in {}: {error}", folder.display()));
    if file.try_lock().is_err() {
        return false;
    }
    CLAIMED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(file);
    true
}

fn claims_folder() -> PathBuf {
    std::env::temp_dir().join("loket-test-ports")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_handed_out_once_and_lies_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        let below = ephemeral_range_start();
        assert!(
            ports.iter().all(|port| (LOWEST..below).contains(port)),
            "{ports:?}"
        );
        // Another process's claim (here: another open file) refuses it.
        let held = ports[0];
        let again = OpenOptions::new()
            .write(true)
            .open(claims_folder().join(held.to_string()))
            .unwrap();
        assert!(again.try_lock().is_err(), "{held} is claimed");
    }
}
