//! The user-data parsers must never panic, and a successful rewrite must be readable back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vpc_cni_tuner::userdata::{UserDataFormat, detect, read_max_pods, set_max_pods};

fuzz_target!(|data: &[u8]| {
    let _ = detect(data);
    for format in [UserDataFormat::Al2023, UserDataFormat::Al2, UserDataFormat::Bottlerocket] {
        let _ = read_max_pods(data, format);
        if let Ok(rewrite) = set_max_pods(data, Some(format), 110) {
            assert_eq!(read_max_pods(&rewrite.data, format), Ok(Some(110)));
            let again = set_max_pods(&rewrite.data, Some(format), 110).expect("rewrite twice");
            assert!(!again.changed, "applying twice must change nothing");
        }
    }
});
