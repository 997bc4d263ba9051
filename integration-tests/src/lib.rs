//! End-to-end scenarios live in `tests/`, one per file; see README.md.
