#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| myelin::fuzzing::x_matrix(data));
