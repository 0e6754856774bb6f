//! Block byte layouts (work in progress).
