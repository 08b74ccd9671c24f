//! The wire protocol between the shoal controller and its Python processes.
//!
//! Every Python process (the collector and each worker) connects to the controller's Unix
//! socket and speaks length-prefixed JSON frames: a 4-byte big-endian length, then that many
//! bytes of one JSON object whose `type` field names the message. The socket is a channel of
//! its own, so nothing a test prints can corrupt it.
//!
//! `docs/protocol.md` is the reference for every message; the Python side lives in
//! `crates/shoal-runner/python/_shoal/`. Both must change together, and any change
//! that an older peer would misread bumps [`PROTOCOL_VERSION`].

use std::io::{self, Read, Write};

use serde::{de::DeserializeOwned, Serialize};

mod messages;

#[cfg(test)]
mod doc_check;

pub use messages::*;

/// The version both sides announce in `hello`; a mismatch ends the run with a clear error.
pub const PROTOCOL_VERSION: u32 = 9;

/// The largest frame either side accepts. A collection of a million node ids fits well inside.
pub const MAX_FRAME_LEN: usize = 64 << 20;

/// A frame could not be read, written or understood.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("read or write the socket")]
    Io(#[from] io::Error),
    #[error("accept a frame of {len} bytes (the limit is {MAX_FRAME_LEN})")]
    TooLarge { len: usize },
    #[error("read a whole frame: the peer closed the socket {got} bytes into it")]
    Truncated { got: usize },
    #[error("decode a message: {reason}; the frame began {preview:?}")]
    Malformed { reason: String, preview: String },
    #[error("encode a message")]
    Encode(#[source] serde_json::Error),
}

/// Writes one message as a frame.
pub fn write_frame<W: Write, T: Serialize>(out: &mut W, message: &T) -> Result<(), FrameError> {
    let body = serde_json::to_vec(message).map_err(FrameError::Encode)?;
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len: body.len() });
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    out.write_all(&frame)?;
    Ok(())
}

/// Reads one frame's body; `Ok(None)` when the peer closed the socket between frames.
pub fn read_frame<R: Read>(input: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; 4];
    let got = read_full(input, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    if got < header.len() {
        return Err(FrameError::Truncated { got });
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len });
    }
    let mut body = vec![0u8; len];
    let got = read_full(input, &mut body)?;
    if got < len {
        return Err(FrameError::Truncated { got: 4 + got });
    }
    Ok(Some(body))
}

/// Decodes a frame's body into a message.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(|e| FrameError::Malformed {
        reason: e.to_string(),
        preview: String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned(),
    })
}

/// Reads every frame in `bytes` and decodes each as a [`FromPython`] message, stopping at the
/// first error: what the controller does with a worker's byte stream. It must return for any
/// input, never panic or allocate beyond [`MAX_FRAME_LEN`]; the fuzz target
/// (`crates/shoal-protocol/fuzz`) and `tests::random_bytes_never_panic` hold it to that.
pub fn decode_all(mut bytes: &[u8]) -> Vec<Result<FromPython, FrameError>> {
    let mut out = Vec::new();
    loop {
        match read_frame(&mut bytes) {
            Ok(Some(body)) => {
                let message = decode(&body);
                let failed = message.is_err();
                out.push(message);
                if failed {
                    return out;
                }
            }
            Ok(None) => return out,
            Err(e) => {
                out.push(Err(e));
                return out;
            }
        }
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full<R: Read>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugins_own_outcome_travels_as_it_is() {
        let outcomes: Vec<Outcome> = serde_json::from_str(r#"["failed", "rerun"]"#).unwrap();
        assert_eq!(outcomes, [Outcome::Failed, Outcome::Other("rerun".into())]);
        assert_eq!(
            serde_json::to_string(&outcomes).unwrap(),
            r#"["failed","rerun"]"#
        );
        assert!(serde_json::from_str::<When>(r#""rerun""#).is_err());
    }

    #[test]
    fn a_frame_round_trips() {
        let mut buf = Vec::new();
        write_frame(
            &mut buf,
            &ToPython::Run {
                indices: vec![3, 4],
            },
        )
        .unwrap();
        let body = read_frame(&mut buf.as_slice()).unwrap().unwrap();
        let back: ToPython = decode(&body).unwrap();
        assert_eq!(
            back,
            ToPython::Run {
                indices: vec![3, 4]
            }
        );
    }

    #[test]
    fn end_of_input_between_frames_is_a_clean_close() {
        assert!(read_frame(&mut [].as_slice()).unwrap().is_none());
    }

    #[test]
    fn a_cut_frame_is_truncated() {
        let err = read_frame(&mut [0u8, 0, 0, 9, b'{'].as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::Truncated { got: 5 }), "{err:?}");
    }

    #[test]
    fn an_oversized_length_is_refused_before_allocating() {
        let err = read_frame(&mut [0xffu8, 0xff, 0xff, 0xff].as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err:?}");
    }

    /// The fuzz target's property, on seeded random input for a bounded time: arbitrary
    /// bytes, frames with random lengths, and valid messages with bytes flipped.
    #[test]
    fn random_bytes_never_panic() {
        let mut state: u64 = 0x5eed_f00d_cafe_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut valid = Vec::new();
        write_frame(
            &mut valid,
            &FromPython::TestDone {
                index: 3,
                headline: Some("t".into()),
                reports: Vec::new(),
                warnings: Vec::new(),
                junit: None,
                exit: None,
                replay: None,
                recycle: None,
                leaks: Vec::new(),
            },
        )
        .unwrap();
        let started = std::time::Instant::now();
        let mut cases = 0;
        while cases < 200_000 && started.elapsed() < std::time::Duration::from_secs(2) {
            let len = (next() % 64) as usize;
            let mut input: Vec<u8> = match cases % 3 {
                0 => (0..len).map(|_| next() as u8).collect(),
                1 => {
                    let mut v = ((next() % 256) as u32).to_be_bytes().to_vec();
                    v.extend((0..len).map(|_| next() as u8));
                    v
                }
                _ => valid.clone(),
            };
            if !input.is_empty() {
                let at = (next() as usize) % input.len();
                input[at] ^= next() as u8;
            }
            let _ = decode_all(&input);
            cases += 1;
        }
        assert!(cases > 1000, "only {cases} cases ran");
    }

    fn reports_of(body: &str) -> Result<Vec<PhaseReport>, FrameError> {
        match decode::<FromPython>(body.as_bytes())? {
            FromPython::TestDone { reports, .. } => Ok(reports),
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn a_plain_pass_travels_as_its_duration() {
        let failed = r#"{"when":"call","outcome":"failed","duration":0.5,"category":"failed","letter":"F","word":"FAILED","text":"boom"}"#;
        let reports = reports_of(&format!(
            r#"{{"type":"test_done","index":1,"reports":[0.25,{failed},1]}}"#
        ))
        .unwrap();
        assert_eq!(reports[0], PhaseReport::plain_pass(When::Setup, 0.25));
        assert_eq!(reports[1].outcome, Outcome::Failed);
        assert_eq!(reports[1].text.as_deref(), Some("boom"));
        assert_eq!(reports[2], PhaseReport::plain_pass(When::Teardown, 1.0));
        let call = &reports_of(r#"{"type":"test_done","index":1,"reports":[0,0.5,0]}"#).unwrap()[1];
        assert_eq!(
            (
                call.when,
                call.category.as_str(),
                call.letter.as_str(),
                call.word.as_str()
            ),
            (When::Call, "passed", ".", "PASSED")
        );
    }

    #[test]
    fn a_duration_outside_setup_call_and_teardown_is_malformed() {
        // Two reports (a failed setup, then teardown): no phase follows from a place.
        let setup = r#"{"when":"setup","outcome":"failed","duration":0,"category":"error","letter":"E","word":"ERROR"}"#;
        for reports in [
            format!("[{setup},0.1]"),
            "[0.1,0.1,0.1,0.1]".to_owned(),
            // A report in another phase's place.
            format!("[0.1,{setup},0.1]"),
            r#"[0.1,"passed",0.1]"#.to_owned(),
        ] {
            let body = format!(r#"{{"type":"test_done","index":1,"reports":{reports}}}"#);
            let err = reports_of(&body).unwrap_err();
            assert!(
                matches!(err, FrameError::Malformed { .. }),
                "{reports}: {err:?}"
            );
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let err = decode::<FromPython>(b"\x00\x01 not json").unwrap_err();
        assert!(matches!(err, FrameError::Malformed { .. }), "{err:?}");
        let err = decode::<FromPython>(br#"{"type":"no_such_message"}"#).unwrap_err();
        assert!(matches!(err, FrameError::Malformed { .. }), "{err:?}");
    }
}
