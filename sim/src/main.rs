//! busline-sim: placeholder until the simulator lands.
#![forbid(unsafe_code)]

fn main() {}
