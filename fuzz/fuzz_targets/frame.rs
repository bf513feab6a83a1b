//! The frame decoder on arbitrary bytes: never a panic, and whatever it accepts re-encodes to
//! exactly the bytes it was decoded from.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nrt_sendrecv::fuzzing::{Frame, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = Frame::decode(data) {
        assert!(data.len() >= HEADER_LEN);
        assert_eq!(&f.encode()[..], &data[..HEADER_LEN], "accepted frame must re-encode identically");
    }
});
