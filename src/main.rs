use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    myelin::allocator::configure();
    myelin::cli::run(myelin::cli::Cli::parse())
}
