//! The gateway's own HTTP/1.1, beside hyper's: the client-side loop ([`server`]),
//! the backend-side client ([`client`]), and what they share.

pub mod client;
pub mod deadline;
pub mod fields;
pub mod prefixed;
pub mod server;
pub mod wire;
