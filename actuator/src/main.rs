//! `berth-actuator`: parse the flags, run until SIGTERM.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    berth_actuator::run(berth_actuator::args::Args::parse())
}
