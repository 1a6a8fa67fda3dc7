//! DTMF in its three forms — RFC 4733 telephone-events, SIP INFO bodies and
//! in-band tones (Goertzel) — and the `*`+digit shortcode matcher.

use std::time::{Duration, Instant};

/// How a digit reached the recorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtmfMethod {
    /// RTP telephone-event (RFC 4733).
    Rfc4733,
    /// SIP INFO with `application/dtmf-relay` or `application/dtmf`.
    SipInfo,
    /// Audio tones detected in G.711 media.
    InBand,
}

impl DtmfMethod {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            DtmfMethod::Rfc4733 => "rfc4733",
            DtmfMethod::SipInfo => "sip_info",
            DtmfMethod::InBand => "inband",
        }
    }
}

/// An RFC 4733 §2.3 named-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0-9 digits, 10 `*`, 11 `#`, 12-15 A-D).
    pub event: u8,
    /// The end bit.
    pub end: bool,
    /// Duration so far in timestamp units.
    pub duration: u16,
}

/// Parses a telephone-event payload; `None` when it is not one.
pub fn parse_telephone_event(payload: &[u8]) -> Option<TelephoneEvent> {
    // Several events may be stacked in one packet (RFC 4733 §2.5.1.5); the first is the current one.
    if payload.len() < 4 {
        return None;
    }
    Some(TelephoneEvent {
        event: payload[0],
        end: payload[1] & 0x80 != 0,
        duration: u16::from_be_bytes([payload[2], payload[3]]),
    })
}

/// The DTMF character of an event code.
pub fn event_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// Reports each RFC 4733 event once, although senders repeat its packets
/// (updates and three end packets) — all of them share one RTP timestamp.
#[derive(Debug, Default, Clone)]
pub struct EventDeduper {
    last: Option<(u32, u32)>,
}

impl EventDeduper {
    /// True for the first packet of a new event.
    pub fn is_new(&mut self, ssrc: u32, timestamp: u32) -> bool {
        if self.last == Some((ssrc, timestamp)) {
            return false;
        }
        self.last = Some((ssrc, timestamp));
        true
    }
}

/// The digit in a SIP INFO body of the given (lower-case) content type.
pub fn parse_info(content_type: &str, body: &[u8]) -> Option<char> {
    let text = std::str::from_utf8(body).ok()?;
    let signal = match content_type {
        "application/dtmf-relay" => text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim().eq_ignore_ascii_case("signal").then(|| v.trim())
        })?,
        "application/dtmf" => text.trim(),
        _ => return None,
    };
    match signal {
        "10" => Some('*'),
        "11" => Some('#'),
        s if s.len() == 1 => {
            let c = s.chars().next()?.to_ascii_uppercase();
            matches!(c, '0'..='9' | '*' | '#' | 'A'..='D').then_some(c)
        }
        _ => None,
    }
}

/// Samples per Goertzel block: 205 at 8 kHz is the classic choice, with bins
/// close to all eight DTMF frequencies.
const BLOCK: usize = 205;
const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

fn coefficients(freqs: &[f32; 4]) -> [f32; 4] {
    freqs.map(|f| {
        let k = (0.5 + BLOCK as f32 * f / 8000.0).floor();
        2.0 * (2.0 * std::f32::consts::PI * k / BLOCK as f32).cos()
    })
}

/// In-band DTMF detector for 8 kHz linear audio.
#[derive(Debug, Clone)]
pub struct ToneDetector {
    row_coeff: [f32; 4],
    col_coeff: [f32; 4],
    buf: Vec<f32>,
    /// Digit seen in the previous block.
    candidate: Option<char>,
    /// Digit already reported and still sounding.
    reported: Option<char>,
}

impl Default for ToneDetector {
    fn default() -> Self {
        Self {
            row_coeff: coefficients(&ROWS),
            col_coeff: coefficients(&COLS),
            buf: Vec::with_capacity(BLOCK),
            candidate: None,
            reported: None,
        }
    }
}

impl ToneDetector {
    /// Feeds samples; returns each digit once, when it has sounded for two
    /// blocks (about 50 ms, the ITU minimum is 40 ms).
    pub fn push(&mut self, samples: impl IntoIterator<Item = i16>) -> Option<char> {
        let mut found = None;
        for s in samples {
            self.buf.push(s as f32);
            if self.buf.len() == BLOCK {
                let digit = self.analyse();
                self.buf.clear();
                match digit {
                    Some(d) if self.candidate == Some(d) && self.reported != Some(d) => {
                        self.reported = Some(d);
                        found = Some(d);
                    }
                    Some(_) => {}
                    None => self.reported = None,
                }
                self.candidate = digit;
            }
        }
        found
    }

    fn analyse(&self) -> Option<char> {
        let energy: f32 = self.buf.iter().map(|s| s * s).sum();
        // About -36 dBm0: quieter blocks are not keyed digits.
        if energy / (BLOCK as f32) < 250_000.0 {
            return None;
        }
        let power = |coeff: f32| {
            let (mut s1, mut s2) = (0.0f32, 0.0f32);
            for &x in &self.buf {
                let s = x + coeff * s1 - s2;
                s2 = s1;
                s1 = s;
            }
            s1 * s1 + s2 * s2 - coeff * s1 * s2
        };
        let rows = self.row_coeff.map(power);
        let cols = self.col_coeff.map(power);
        let best = |p: &[f32; 4]| {
            let mut idx: Vec<usize> = (0..4).collect();
            idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            (idx[0], p[idx[0]], p[idx[1]])
        };
        let (r, rp, r2) = best(&rows);
        let (c, cp, c2) = best(&cols);
        // For a pure pair of tones each bin holds about a quarter of N * energy.
        let norm = BLOCK as f32 * energy;
        let strong = rp / norm > 0.08 && cp / norm > 0.08 && (rp + cp) / norm > 0.3;
        let clean = rp > 6.0 * r2 && cp > 6.0 * c2;
        let twist_ok = rp < 6.3 * cp && cp < 6.3 * rp;
        (strong && clean && twist_ok).then(|| KEYS[r][c])
    }
}

/// How long after `*` the digit may follow.
pub const SHORTCODE_WINDOW: Duration = Duration::from_secs(3);

/// Recognises `*` followed by one digit within [`SHORTCODE_WINDOW`].
#[derive(Debug, Default, Clone)]
pub struct ShortcodeMatcher {
    star_at: Option<Instant>,
}

impl ShortcodeMatcher {
    /// Feeds one keyed character; returns the digit when it completes `*`+digit.
    pub fn key(&mut self, now: Instant, key: char) -> Option<u8> {
        match key {
            '*' => {
                self.star_at = Some(now);
                None
            }
            '0'..='9' => {
                let star = self.star_at.take()?;
                (now.duration_since(star) <= SHORTCODE_WINDOW).then(|| key as u8 - b'0')
            }
            _ => {
                self.star_at = None;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(digit: char, ms: usize, amplitude: f32) -> Vec<i16> {
        let (r, c) = KEYS
            .iter()
            .enumerate()
            .find_map(|(r, row)| row.iter().position(|&k| k == digit).map(|c| (r, c)))
            .unwrap();
        (0..ms * 8)
            .map(|n| {
                let t = n as f32 / 8000.0;
                let v = amplitude
                    * ((2.0 * std::f32::consts::PI * ROWS[r] * t).sin()
                        + (2.0 * std::f32::consts::PI * COLS[c] * t).sin());
                v as i16
            })
            .collect()
    }

    #[test]
    fn detects_every_key_once() {
        for key in "0123456789*#ABCD".chars() {
            let mut d = ToneDetector::default();
            let mut seen = Vec::new();
            let mut audio = tone(key, 80, 6000.0);
            audio.extend(std::iter::repeat_n(0, 800));
            audio.extend(tone(key, 80, 6000.0));
            for chunk in audio.chunks(160) {
                if let Some(k) = d.push(chunk.iter().copied()) {
                    seen.push(k);
                }
            }
            assert_eq!(seen, [key, key], "key {key}");
        }
    }

    #[test]
    fn ignores_speech_like_single_tones_and_silence() {
        let mut d = ToneDetector::default();
        let sine = |f: f32| {
            (0..8000).map(move |n| {
                (8000.0 * (2.0 * std::f32::consts::PI * f * n as f32 / 8000.0).sin()) as i16
            })
        };
        for f in [440.0, 697.0, 1000.0, 1209.0] {
            assert_eq!(d.push(sine(f)), None, "{f} Hz");
        }
        assert_eq!(d.push(std::iter::repeat_n(0, 8000)), None);
        // A quiet key press below the threshold is not a digit.
        assert_eq!(d.push(tone('5', 100, 100.0)), None);
    }

    #[test]
    fn telephone_events() {
        let e = parse_telephone_event(&[10, 0x8a, 0x03, 0x20]).unwrap();
        assert_eq!(
            (event_digit(e.event), e.end, e.duration),
            (Some('*'), true, 800)
        );
        assert_eq!(parse_telephone_event(&[1, 2]), None);
        let mut dedupe = EventDeduper::default();
        assert!(dedupe.is_new(1, 160));
        assert!(!dedupe.is_new(1, 160));
        assert!(dedupe.is_new(1, 800));
    }

    #[test]
    fn info_bodies() {
        assert_eq!(
            parse_info("application/dtmf-relay", b"Signal=*\r\nDuration=160\r\n"),
            Some('*')
        );
        assert_eq!(
            parse_info("application/dtmf-relay", b"Signal= 5\r\n"),
            Some('5')
        );
        assert_eq!(parse_info("application/dtmf", b"11"), Some('#'));
        assert_eq!(parse_info("application/dtmf", b"x"), None);
        assert_eq!(parse_info("text/plain", b"5"), None);
    }

    #[test]
    fn shortcode_window() {
        let t0 = Instant::now();
        let mut m = ShortcodeMatcher::default();
        assert_eq!(m.key(t0, '*'), None);
        assert_eq!(m.key(t0 + Duration::from_secs(1), '5'), Some(5));
        assert_eq!(
            m.key(t0 + Duration::from_secs(2), '5'),
            None,
            "a digit alone is nothing"
        );
        m.key(t0, '*');
        assert_eq!(
            m.key(t0 + Duration::from_millis(3001), '5'),
            None,
            "too late"
        );
        m.key(t0, '*');
        m.key(t0, '#');
        assert_eq!(m.key(t0, '5'), None, "anything else resets");
        m.key(t0, '*');
        m.key(t0, '*');
        assert_eq!(m.key(t0, '7'), Some(7), "a second star restarts the code");
    }
}
