//! The embedded durable stream (SQLite). Being written in this change.
