#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| myelin::fuzzing::canonical_json(data));
