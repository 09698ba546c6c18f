//! The embedded store: SQLite in WAL mode, in the data folder.

pub struct SqliteStore {}
