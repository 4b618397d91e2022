//! The `sandlock` command (work in progress).

fn main() {}
