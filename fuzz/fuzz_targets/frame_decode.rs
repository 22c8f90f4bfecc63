//! Fuzzes the TMP frame decoder: a peer's bytes must never panic the decoder, and whatever
//! it accepts must encode back to a frame that decodes to the same value.
//!
//! The first input byte picks the decoder (channel head, response head, or length prefix);
//! the rest is the frame payload as it would arrive after the 4-byte length prefix.
#![no_main]

use causeway_link::frame::{self, ChannelHead, ResponseHead};
use libfuzzer_sys::fuzz_target;

/// Splits an encoded frame into its length prefix's value and its payload.
fn unframe(encoded: &[u8]) -> (usize, &[u8]) {
    let prefix: [u8; 4] = encoded[..4]
        .try_into()
        .expect("every frame has a 4-byte prefix");
    let length = frame::frame_length(prefix).expect("an encoded frame respects the size limit");
    (length, &encoded[4..])
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Ok(head) = ChannelHead::decode(payload) {
                let encoded = head.encode();
                let (length, body) = unframe(&encoded);
                assert_eq!(length, body.len(), "prefix matches the payload");
                let again = ChannelHead::decode(body).expect("a re-encoded channel head decodes");
                assert_eq!(again, head, "channel head round trip");
            }
        }
        1 => {
            if let Ok(head) = ResponseHead::decode(payload) {
                let encoded = head.encode();
                let (length, body) = unframe(&encoded);
                assert_eq!(length, body.len(), "prefix matches the payload");
                let again = ResponseHead::decode(body).expect("a re-encoded response head decodes");
                assert_eq!(again, head, "response head round trip");
            }
        }
        _ => {
            // A stream of frames as a reader sees it: prefix, payload, prefix, payload, ...
            let mut rest = payload;
            while rest.len() >= 4 {
                let prefix: [u8; 4] = rest[..4].try_into().expect("4 bytes");
                let Ok(length) = frame::frame_length(prefix) else {
                    break;
                };
                assert!(length <= frame::MAX_FRAME_BYTES);
                rest = &rest[4..];
                let take = length.min(rest.len());
                let (body, tail) = rest.split_at(take);
                let _ = ChannelHead::decode(body);
                let _ = ResponseHead::decode(body);
                rest = tail;
            }
        }
    }
});
