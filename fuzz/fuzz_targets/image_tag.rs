//! The aws-node image tag parser must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vpc_cni_tuner::engine::CniVersion;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(version) = CniVersion::from_image(text) {
            assert_eq!(version.to_string().parse::<CniVersion>(), Ok(version));
        }
        let _ = text.parse::<CniVersion>();
    }
});
