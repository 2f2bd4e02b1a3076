//! Sweeps: one scenario under many policies and windows, in parallel.
