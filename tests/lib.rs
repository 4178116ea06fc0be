//! Integration tests for mixplane live in this package's `tests/` directory; this library is
//! empty and exists so that `cargo test --workspace` builds and runs them.
