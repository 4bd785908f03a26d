//! The integration test binary: a real gateway and real echo agents on 127.0.0.1.

mod docker;
mod errors;
mod proxying;
mod routing;
mod shutdown;
mod support;
