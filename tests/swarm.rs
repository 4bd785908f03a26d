//! Swarm discovery against a real 2-node swarm on this machine (no mocks): node 1 is
//! the host's engine (manager), node 2 a second engine in a network namespace
//! (worker), built by `scripts/swarm/two-node.sh`. Agents are Swarm services of the
//! echo image; the gateway is a container on the overlay with its ports published on
//! 127.0.0.1, and the load client runs here, on the host, against those ports only
//! (never an overlay address).
//!
//! Swarm mode is daemon-wide, so these tests are `#[ignore]`d and run alone, one at a
//! time, after the other Docker tests (`.ci/run`):
//!
//! ```sh
//! scripts/swarm/two-node.sh run cargo test --test swarm -- --ignored --test-threads=1
//! ```
//!
//! Without `two-node.sh run` around it the first test brings the swarm up itself and
//! a reaper process tears it down when the test process exits. With no engine (or
//! not root) they print a skip notice; with `CI=true` that is a failure.

mod swarm {
    pub mod cluster;
    pub mod gateway;
    pub mod traffic;

    mod any_replica;
    mod api_loss;
    mod bad_canary;
    mod cost;
    mod driver_loss;
    mod node_loss;
    mod pinning;
    mod replicas;
    mod rolling;
    mod scale;
    mod store_loss;
    mod worker;
}
