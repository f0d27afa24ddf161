//! The database: one interface over the stores. For now the SQLite store alone (`sqlite.rs`).

mod sqlite;

pub use sqlite::*;
