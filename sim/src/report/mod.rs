//! Reports: CSV, plots, checks and the README of reports/sim.
