//! cache-http (being written).
