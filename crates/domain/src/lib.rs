//! The campus food ordering domain, shared by every service and transport.
//!
//! Everything here is pure: "given this order and this stock, what happens"
//! is a plain function. Services and adapters translate to and from it.

pub mod api;
pub mod backoff;
pub mod catalogue;
pub mod event;
pub mod fault;
pub mod order;
pub mod part;
pub mod reader;
pub mod request;
pub mod reservation;
pub mod trace;

pub use backoff::Backoff;
pub use catalogue::{Catalogue, ItemName, StockSpecError};
pub use event::{Envelope, Event, EventType, Poison};
pub use fault::{FaultDecision, FaultError, Faults};
pub use order::{Order, OrderId, OrderLine, OrderStatus};
pub use part::{Broker, Service, Transport};
pub use reader::Arrival;
pub use request::{OrderRequest, ValidationError};
pub use reservation::{ReservationError, plan_reservation};
pub use trace::{TRACEPARENT, TraceContext};
