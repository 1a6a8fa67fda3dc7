//! G.711 µ-law and A-law (ITU-T G.711) to 16-bit linear PCM, by table.

/// G.711's sample rate (and RTP clock), samples per second.
pub const RATE: u32 = 8000;

/// The two G.711 codecs, by their SDP names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// PCMU.
    Ulaw,
    /// PCMA.
    Alaw,
}

impl Law {
    /// The law of a codec name from SDP (any case); `None` for any other codec (which
    /// the recorder can neither decode nor encode).
    pub fn of(codec: &str) -> Option<Law> {
        if codec.eq_ignore_ascii_case("PCMU") {
            Some(Law::Ulaw)
        } else if codec.eq_ignore_ascii_case("PCMA") {
            Some(Law::Alaw)
        } else {
            None
        }
    }

    /// Decodes one byte.
    pub fn decode(self, b: u8) -> i16 {
        match self {
            Law::Ulaw => ulaw_to_linear(b),
            Law::Alaw => alaw_to_linear(b),
        }
    }

    /// Encodes one sample.
    pub fn encode(self, s: i16) -> u8 {
        match self {
            Law::Ulaw => linear_to_ulaw(s),
            Law::Alaw => linear_to_alaw(s),
        }
    }
}

/// Decodes one µ-law byte.
pub fn ulaw_to_linear(u: u8) -> i16 {
    ULAW[u as usize]
}

/// Decodes one A-law byte.
pub fn alaw_to_linear(a: u8) -> i16 {
    ALAW[a as usize]
}

/// Encodes a linear sample as µ-law (test signals and announcements).
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && s & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// Encodes a linear sample as A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    const SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let mut v = (sample as i32) >> 3;
    let mask = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let Some(seg) = SEG_END.iter().position(|&end| v <= end) else {
        return (0x7F ^ mask) as u8;
    };
    let mantissa = if seg < 2 {
        (v >> 1) & 0x0F
    } else {
        (v >> seg) & 0x0F
    };
    (((seg as i32) << 4 | mantissa) ^ mask) as u8
}

const fn ulaw_entry(u: u8) -> i16 {
    let u = !u;
    let sign = u & 0x80;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if sign != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn alaw_entry(a: u8) -> i16 {
    let a = a ^ 0x55;
    let sign = a & 0x80;
    let exponent = ((a >> 4) & 0x07) as i32;
    let mantissa = (a & 0x0F) as i32;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if sign != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn build(law: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if law {
            ulaw_entry(i as u8)
        } else {
            alaw_entry(i as u8)
        };
        i += 1;
    }
    t
}

static ULAW: [i16; 256] = build(true);
static ALAW: [i16; 256] = build(false);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        // ITU-T G.711 reference points.
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
    }

    #[test]
    fn encode_decode_round_trip_within_quantisation() {
        for s in (-32000i32..32000).step_by(97) {
            let s = s as i16;
            let u = ulaw_to_linear(linear_to_ulaw(s)) as i32;
            let a = alaw_to_linear(linear_to_alaw(s)) as i32;
            let tol = (s as i32).abs() / 16 + 16;
            assert!((u - s as i32).abs() <= tol, "ulaw {s} -> {u}");
            assert!((a - s as i32).abs() <= tol, "alaw {s} -> {a}");
        }
    }
}
