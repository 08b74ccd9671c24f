//! Everything a run leaves behind for people and tools: the terminal output, the JUnit XML
//! file and pytest's cache. Each consumes the finished [`Results`](crate::results::Results);
//! none reaches back into scheduling.

pub mod cache;
pub mod events;
pub mod junit;
pub mod live;
pub mod terminal;

pub use terminal::{StopReason, Terminal};
