//! How bytes reach a client: the bounded `Outbox` of each socket (responses and
//! notifications in one FIFO), the `Outgoing` message that many sockets share (deflated at
//! most once per window size), its frames on the wire, and the fan-out (`deliver`).
//!
//! The realtime hub, the session registry and the API queue messages here and know no
//! transport; a transport (`ws`) makes an outbox for each socket it accepts and runs the
//! socket's write loop. Deliveries are static calls on the outbox: nothing is allocated
//! or dispatched dynamically per delivery.

pub mod connections;
pub mod outbox;
pub mod writer;

pub use connections::Connections;
pub use outbox::{CloseReason, Outbox, close_reason, deliver};
pub use writer::{Compression, Outgoing};
