//! SRTP through the public API, as the recorder uses it: an `a=crypto:`
//! value parsed into a key, a receiver per direction, packets in.
//!
//! Known answers come from outside this crate: libsrtp's own self-test
//! packets (`srtp_validate`, `srtp_validate_gcm`), and packets made by an
//! independent implementation on Python's `cryptography` (AES-CTR, AES-GCM,
//! HMAC-SHA1) for what libsrtp's vectors do not cover — the 32-bit tag,
//! AES-256, CSRCs, a header extension, ROC 1 and MKIs. That implementation
//! reproduces both libsrtp vectors byte for byte. RFC 3711 B.2/B.3 and
//! RFC 7714 §16/§17 are unit tests in `src/srtp.rs`: they need the PRF, or
//! keys no master key derives.

use std::time::Instant;

use earshot_recorder_core::srtp::{
    CryptoError, MAX_ATTR_LEN, MAX_SSRCS, Mki, SdesKey, SrtpError, SrtpReceiver, SrtpSender, Suite,
    fuzz_srtp, parse_crypto,
};
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    assert_eq!(digits.len() % 2, 0, "odd hex in {s:?}");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

fn mk_key(suite: Suite, seed: u8) -> SdesKey {
    let bytes: Vec<u8> = (0..44u8).map(|i| i.wrapping_mul(31) ^ seed).collect();
    SdesKey::new(
        1,
        suite,
        &bytes[..suite.master_key_len() + suite.master_salt_len()],
    )
    .unwrap()
}

/// An RTP packet: `csrcs` CSRCs, an optional RFC 8285 one-byte extension
/// of two words, `payload_len` bytes of payload.
fn mk_rtp(seq: u16, ssrc: u32, csrcs: u8, ext: bool, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0x80 | csrcs | if ext { 0x10 } else { 0 }, 0x88];
    p.extend(seq.to_be_bytes());
    p.extend(
        0x0001_e240_u32
            .wrapping_add(u32::from(seq) * 160)
            .to_be_bytes(),
    );
    p.extend(ssrc.to_be_bytes());
    for i in 0..u32::from(csrcs) {
        p.extend((0x1111_1111 * (i + 1)).to_be_bytes());
    }
    if ext {
        p.extend(hex("bede0002 10ff2233 44556677"));
    }
    p.extend((0..payload_len).map(|i| (i * 7 + usize::from(seq)) as u8));
    p
}

fn mk_rtcp(ssrc: u32, n: u8) -> Vec<u8> {
    let mut p = vec![0x81, 0xc8, 0x00, 0x0b];
    p.extend(ssrc.to_be_bytes());
    p.extend([n; 40]);
    p
}

fn header_len(csrcs: u8, ext: bool) -> usize {
    12 + 4 * usize::from(csrcs) + if ext { 12 } else { 0 }
}

/// libsrtp `srtp_validate`: AES_CM_128_HMAC_SHA1_80 under RFC 3711 B.3's
/// master key, SSRC cafebabe, SEQ 1234; SRTCP index 1 (libsrtp numbers its
/// first SRTCP packet 1, RFC 3711 says 0: the sender here sends one first).
#[test]
fn libsrtp_aes_cm_128_hmac_sha1_80() {
    let key =
        parse_crypto("1 AES_CM_128_HMAC_SHA1_80 inline:4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqvm")
            .unwrap();
    let plain = hex("800f1234 decafbad cafebabe abababab abababab abababab abababab");
    let protected = hex(
        "800f1234 decafbad cafebabe 4e55dc4c e79978d8 8ca4d215 949d2402 b78d6acc
         99ea179b 8dbb",
    );
    assert_eq!(
        SrtpSender::new(&key).protect_rtp(&plain),
        Ok(protected.clone())
    );
    let mut rx = SrtpReceiver::new(&key);
    assert_eq!(rx.unprotect_rtp(&protected), Ok(plain));

    let plain = hex("81c8000b cafebabe abababab abababab abababab abababab");
    let protected = hex(
        "81c8000b cafebabe 7128035b e487b9bd bef89041 f977a5a8 80000001 993e08cd
         54d6c123 0798",
    );
    let mut tx = SrtpSender::new(&key);
    tx.protect_rtcp(&plain).unwrap();
    assert_eq!(tx.protect_rtcp(&plain), Ok(protected.clone()));
    assert_eq!(rx.unprotect_rtcp(&protected), Ok(plain));
}

/// libsrtp `srtp_validate_gcm`: AEAD_AES_128_GCM, master key 00..0f, salt
/// a0..ab — through the RFC 7714 §11 key derivation, which RFC 7714's own
/// vectors skip.
#[test]
fn libsrtp_aead_aes_128_gcm() {
    let key =
        parse_crypto("9 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0OD6ChoqOkpaanqKmqqw==").unwrap();
    assert_eq!((key.tag, key.suite), (9, Suite::AeadAes128Gcm));
    let plain = hex("800f1234 decafbad cafebabe abababab abababab abababab abababab");
    let protected = hex(
        "800f1234 decafbad cafebabe c5002ede 04cfdd2e b91159e0 880aa06e d2976826
         f796b201 df3131a1 27e8a392",
    );
    assert_eq!(
        SrtpSender::new(&key).protect_rtp(&plain),
        Ok(protected.clone())
    );
    let mut rx = SrtpReceiver::new(&key);
    assert_eq!(rx.unprotect_rtp(&protected), Ok(plain));

    let plain = hex("81c8000b cafebabe abababab abababab abababab abababab");
    let protected = hex(
        "81c8000b cafebabe c98b8b5d f0392a55 852b6c21 ac8e7025 c52c6fbe a2b3b446
         ea31123b a88ce61e 80000001",
    );
    let mut tx = SrtpSender::new(&key);
    tx.protect_rtcp(&plain).unwrap();
    assert_eq!(tx.protect_rtcp(&plain), Ok(protected.clone()));
    assert_eq!(rx.unprotect_rtcp(&protected), Ok(plain));
}

/// Two CSRCs and a header extension stay clear (and, for GCM, are the
/// AAD); the packet after the wrap is ROC 1, in the tag and the IV.
/// Known answers from the independent implementation.
#[test]
fn csrcs_extension_and_roc_one() {
    let cases = [
        (
            "1 AES_CM_128_HMAC_SHA1_32 inline:ABEiM0RVZneImaq7zN3u/wECAwQFBgcICQoLDA0O",
            "9288ffff0001e240deadbeef1111111122222222bede000210ff2233445566777407339e7dcba6
             17f308d3612b2d8de08c035100e06d3573",
            "928800020001e240deadbeef1111111122222222bede000210ff2233445566774238b57250f86c
             3b2f38da76be51da38766e5136af2c18fd",
        ),
        (
            "1 AEAD_AES_256_GCM inline:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj+goaKjpKWmp6ipqqs=",
            "9288ffff0001e240deadbeef1111111122222222bede000210ff223344556677993ab7fd5c70f0
             8326012a442111f8dd6c65055f47c479d05163e061eb995af2c4be3ddd",
            "928800020001e240deadbeef1111111122222222bede000210ff223344556677f8995509209358
             eb8f7da4b8875d90591bbffc904a29a0be72df7066bb0b2e87a3d80f99",
        ),
    ];
    let plain = |seq: u16| {
        let mut p = mk_rtp(seq, 0xdead_beef, 2, true, 20);
        p[4..8].copy_from_slice(&hex("0001e240"));
        p
    };
    for (attr, before_wrap, after_wrap) in cases {
        let key = parse_crypto(attr).unwrap();
        let (before_wrap, after_wrap) = (hex(before_wrap), hex(after_wrap));
        let mut tx = SrtpSender::new(&key);
        assert_eq!(
            tx.protect_rtp(&plain(65_535)),
            Ok(before_wrap.clone()),
            "{attr}"
        );
        assert_eq!(tx.protect_rtp(&plain(2)), Ok(after_wrap.clone()), "{attr}");
        let mut rx = SrtpReceiver::new(&key);
        assert_eq!(rx.unprotect_rtp(&before_wrap), Ok(plain(65_535)), "{attr}");
        assert_eq!(rx.unprotect_rtp(&after_wrap), Ok(plain(2)), "{attr}");
        // Seen first, seq 2 is ROC 0: the same bytes no longer verify.
        let mut fresh = SrtpReceiver::new(&key);
        assert_eq!(
            fresh.unprotect_rtp(&after_wrap),
            Err(SrtpError::Authentication)
        );
    }
}

/// An MKI sits before the HMAC tag (RFC 3711 §3.1) but after the GCM tag
/// (RFC 7714 §8); a packet naming another MKI is refused.
#[test]
fn mki_placement() {
    let plain = hex("808800070001e240deadbeef070e151c232a31383f464d545b626970777e858c");
    let rtcp = hex("81c8000b cafebabe abababab abababab abababab abababab");
    let cases = [
        (
            "1 AES_CM_128_HMAC_SHA1_80 inline:4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqvm|2^31|5:2",
            "808800070001e240deadbeef270583af950256b405dea52ec8916dec16ce20340005883eb1406b4c53f49417",
            "81c8000bcafebabeb19c219a086b6c7ae61d8e0bfeb4be3f8000000000055631d6cfc906cdb30f41",
        ),
        (
            "1 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0OD6ChoqOkpaanqKmqqw==|5:2",
            "808800070001e240deadbeefb455603c0a31234bf08e820f822829e1d3a87ada52697051969ed2c6d626bee7a9e786010005",
            "81c8000bcafebabe1f3587a6415de2b37bb8f19d9f2dccbc75daad556903988d1e02a288b06e865c800000000005",
        ),
    ];
    for (attr, srtp, srtcp) in cases {
        let key = parse_crypto(attr).unwrap();
        assert_eq!(key.mki(), Some(Mki { value: 5, len: 2 }));
        let (srtp, srtcp) = (hex(srtp), hex(srtcp));
        let mut tx = SrtpSender::new(&key);
        assert_eq!(tx.protect_rtp(&plain), Ok(srtp.clone()), "{attr}");
        assert_eq!(tx.protect_rtcp(&rtcp), Ok(srtcp.clone()), "{attr}");

        let mut rx = SrtpReceiver::new(&key);
        let mki_at = |p: &[u8]| p.windows(2).rposition(|w| w == [0, 5]).unwrap();
        for (p, unprotect) in [
            (
                &srtp,
                SrtpReceiver::unprotect_rtp
                    as fn(&mut SrtpReceiver, &[u8]) -> Result<Vec<u8>, SrtpError>,
            ),
            (&srtcp, SrtpReceiver::unprotect_rtcp),
        ] {
            let mut other = p.clone();
            other[mki_at(p) + 1] = 6;
            assert_eq!(
                unprotect(&mut rx, &other),
                Err(SrtpError::UnknownMki),
                "{attr}"
            );
        }
        assert_eq!(rx.unprotect_rtp(&srtp), Ok(plain.clone()), "{attr}");
        assert_eq!(rx.unprotect_rtcp(&srtcp), Ok(rtcp.clone()), "{attr}");
    }
}

/// Every suite, with and without CSRCs and an extension, payloads from
/// empty to several blocks: out as sent, header clear, payload not.
#[test]
fn round_trip_every_suite() {
    for suite in Suite::ALL {
        let key = mk_key(suite, 1);
        let mut tx = SrtpSender::new(&key);
        let mut rx = SrtpReceiver::new(&key);
        let mut seq = 100;
        for (csrcs, ext) in [(0, false), (0, true), (3, false), (15, true)] {
            for payload_len in [0, 1, 16, 17, 160, 1200] {
                seq += 1;
                let plain = mk_rtp(seq, 42, csrcs, ext, payload_len);
                let secured = tx.protect_rtp(&plain).unwrap();
                let hdr = header_len(csrcs, ext);
                assert_eq!(secured.len(), plain.len() + suite.rtp_tag_len(), "{suite}");
                assert_eq!(secured[..hdr], plain[..hdr], "{suite}: header in the clear");
                if payload_len >= 16 {
                    assert_ne!(
                        secured[hdr..plain.len()],
                        plain[hdr..],
                        "{suite}: encrypted"
                    );
                }
                assert_eq!(
                    rx.unprotect_rtp(&secured),
                    Ok(plain),
                    "{suite} {csrcs} {ext}"
                );
            }
        }
        for n in 0..3 {
            let plain = mk_rtcp(42, n);
            let secured = tx.protect_rtcp(&plain).unwrap();
            assert_eq!(secured.len(), plain.len() + 4 + suite.rtcp_tag_len());
            assert_eq!(secured[..8], plain[..8]);
            assert_ne!(
                secured[8..plain.len()],
                plain[8..],
                "{suite}: SRTCP encrypted"
            );
            assert_eq!(rx.unprotect_rtcp(&secured), Ok(plain), "{suite}");
        }
    }
}

/// Across 65535 → 0, delivered out of order on both sides of the wrap:
/// each packet decrypts (so its ROC was guessed right) and none twice.
#[test]
fn sequence_wrap_out_of_order() {
    let sent: Vec<u16> = (65_526..=65_535).chain(0..10).collect();
    let order = [
        65_526, 65_527, 65_529, 0, 65_528, 65_531, 65_530, 2, 1, 65_533, 65_535, 3, 65_532, 5,
        65_534, 4, 9, 7, 8, 6,
    ];
    for suite in Suite::ALL {
        let key = mk_key(suite, 2);
        let mut tx = SrtpSender::new(&key);
        let secured: Vec<(u16, Vec<u8>)> = sent
            .iter()
            .map(|&seq| (seq, tx.protect_rtp(&mk_rtp(seq, 7, 1, true, 40)).unwrap()))
            .collect();
        let packet = |seq: u16| &secured.iter().find(|(s, _)| *s == seq).unwrap().1;
        let mut rx = SrtpReceiver::new(&key);
        for seq in order {
            assert_eq!(
                rx.unprotect_rtp(packet(seq)),
                Ok(mk_rtp(seq, 7, 1, true, 40)),
                "{suite}: seq {seq}"
            );
        }
        for seq in [65_530, 0, 9] {
            assert_eq!(
                rx.unprotect_rtp(packet(seq)),
                Err(SrtpError::Replayed),
                "{suite}"
            );
        }
        // And on past the next wrap, skipping ahead as a long silence would.
        for seq in [30_000, 60_000, 65_535, 3, 1] {
            let plain = mk_rtp(seq, 7, 0, false, 10);
            let p = tx.protect_rtp(&plain).unwrap();
            assert_eq!(
                rx.unprotect_rtp(&p),
                Ok(plain),
                "{suite}: seq {seq} of ROC 1/2"
            );
        }
    }
}

#[test]
fn replay_rejected() {
    for suite in Suite::ALL {
        let key = mk_key(suite, 3);
        let mut tx = SrtpSender::new(&key);
        let mut rx = SrtpReceiver::new(&key);
        let first = tx.protect_rtp(&mk_rtp(1, 9, 0, false, 20)).unwrap();
        assert!(rx.unprotect_rtp(&first).is_ok());
        assert_eq!(
            rx.unprotect_rtp(&first),
            Err(SrtpError::Replayed),
            "{suite}"
        );
        // Far behind the newest: outside the window.
        for seq in 2..=200 {
            rx.unprotect_rtp(&tx.protect_rtp(&mk_rtp(seq, 9, 0, false, 20)).unwrap())
                .unwrap();
        }
        assert_eq!(rx.unprotect_rtp(&first), Err(SrtpError::TooOld), "{suite}");
        // The sender will not reuse an index either.
        assert_eq!(
            tx.protect_rtp(&mk_rtp(150, 9, 0, false, 20)),
            Err(SrtpError::Replayed)
        );

        let rtcp = tx.protect_rtcp(&mk_rtcp(9, 1)).unwrap();
        assert!(rx.unprotect_rtcp(&rtcp).is_ok());
        assert_eq!(
            rx.unprotect_rtcp(&rtcp),
            Err(SrtpError::Replayed),
            "{suite}"
        );
    }
}

/// A changed byte anywhere — header, CSRC, extension, payload, MKI, tag,
/// SRTCP index — is refused, and the refusal leaves no trace: the genuine
/// packet is still accepted afterwards, no SSRC was added, and a forged
/// index far ahead did not move the replay window.
#[test]
fn tampered_packet_rejected_without_state_change() {
    for suite in Suite::ALL {
        let mut key = mk_key(suite, 4).to_attribute();
        key.push_str("|3:1");
        let key = parse_crypto(&key).unwrap();
        let mut tx = SrtpSender::new(&key);
        let mut rx = SrtpReceiver::new(&key);
        let warmup = tx.protect_rtp(&mk_rtp(1000, 5, 0, false, 20)).unwrap();
        rx.unprotect_rtp(&warmup).unwrap();

        let genuine = tx.protect_rtp(&mk_rtp(1001, 5, 2, true, 33)).unwrap();
        for at in 0..genuine.len() {
            for bit in [0x01, 0x80] {
                let mut bad = genuine.clone();
                bad[at] ^= bit;
                assert!(
                    rx.unprotect_rtp(&bad).is_err(),
                    "{suite}: byte {at} bit {bit:#x}"
                );
            }
        }
        assert_eq!(rx.tracked_ssrcs(), 1, "{suite}: a forged SSRC got state");
        assert!(
            rx.unprotect_rtp(&genuine).is_ok(),
            "{suite}: genuine after forgeries"
        );

        // A forgery claiming seq 1001 + 30000 must not push 1002 out of the window.
        let mut ahead = tx.protect_rtp(&mk_rtp(1003, 5, 0, false, 20)).unwrap();
        ahead[2..4].copy_from_slice(&31_001u16.to_be_bytes());
        assert_eq!(rx.unprotect_rtp(&ahead), Err(SrtpError::Authentication));
        let next = tx.protect_rtp(&mk_rtp(1002, 5, 0, false, 20)).unwrap();
        assert!(
            rx.unprotect_rtp(&next).is_ok(),
            "{suite}: window moved by a forgery"
        );

        let rtcp = tx.protect_rtcp(&mk_rtcp(5, 2)).unwrap();
        for at in 0..rtcp.len() {
            let mut bad = rtcp.clone();
            bad[at] ^= 0x04;
            assert!(rx.unprotect_rtcp(&bad).is_err(), "{suite}: SRTCP byte {at}");
        }
        assert!(
            rx.unprotect_rtcp(&rtcp).is_ok(),
            "{suite}: genuine SRTCP after forgeries"
        );
    }
}

#[test]
fn wrong_key_rejected() {
    for suite in Suite::ALL {
        let mut tx = SrtpSender::new(&mk_key(suite, 5));
        let mut rx = SrtpReceiver::new(&mk_key(suite, 6));
        let p = tx.protect_rtp(&mk_rtp(1, 1, 0, false, 50)).unwrap();
        assert_eq!(
            rx.unprotect_rtp(&p),
            Err(SrtpError::Authentication),
            "{suite}"
        );
        let p = tx.protect_rtcp(&mk_rtcp(1, 0)).unwrap();
        assert_eq!(
            rx.unprotect_rtcp(&p),
            Err(SrtpError::Authentication),
            "{suite}"
        );
        assert_eq!(rx.tracked_ssrcs(), 0);
    }
    // Same key bytes, other suite: the 80-bit tag is not the 32-bit one.
    let mut tx = SrtpSender::new(&mk_key(Suite::AesCm128HmacSha1_80, 7));
    let mut rx = SrtpReceiver::new(&mk_key(Suite::AesCm128HmacSha1_32, 7));
    let p = tx.protect_rtp(&mk_rtp(1, 1, 0, false, 50)).unwrap();
    assert_eq!(rx.unprotect_rtp(&p), Err(SrtpError::Authentication));
}

/// The examples of RFC 4568 (§4, §6.3, §8.1) and what real SBCs send.
#[test]
fn parse_crypto_accepts_rfc4568_examples() {
    let k = parse_crypto(
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4",
    )
    .unwrap();
    assert_eq!((k.tag, k.suite), (1, Suite::AesCm128HmacSha1_80));
    assert_eq!(k.lifetime(), Some(1 << 20));
    assert_eq!(k.mki(), Some(Mki { value: 1, len: 4 }));

    let k = parse_crypto(
        "1 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32",
    )
    .unwrap();
    assert_eq!(k.suite, Suite::AesCm128HmacSha1_32);
    assert_eq!(k.mki(), Some(Mki { value: 1, len: 32 }));

    let k = parse_crypto(
        "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4 FEC_ORDER=FEC_SRTP",
    );
    assert!(k.is_ok(), "{k:?}");

    for ok in [
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
        "2 aes_cm_128_hmac_sha1_80 INLINE:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1048576",
        "3 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|7:1 KDR=0 WSH=128",
        "123456789 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0OD6ChoqOkpaanqKmqqw",
        "4 AEAD_AES_256_GCM inline:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj+goaKjpKWmp6ipqqs=\r",
    ] {
        assert!(parse_crypto(ok).is_ok(), "{ok}: {:?}", parse_crypto(ok));
    }
    let k = parse_crypto(
        "3 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|7:1",
    )
    .unwrap();
    assert_eq!(
        (k.lifetime(), k.mki()),
        (None, Some(Mki { value: 7, len: 1 }))
    );
}

/// Each refusal names what is wrong, and none quotes key material.
#[test]
fn parse_crypto_refuses_with_named_errors() {
    const KEY: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
    let huge = format!(
        "1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}{}",
        " ".repeat(20_000)
    );
    let cases: Vec<(String, CryptoError, &str)> = vec![
        (
            huge,
            CryptoError::TooLong {
                len: 20_073,
                max: MAX_ATTR_LEN,
            },
            "longer than",
        ),
        ("".into(), CryptoError::Missing("tag"), "no tag"),
        (
            "1".into(),
            CryptoError::Missing("crypto suite"),
            "no crypto suite",
        ),
        (
            "1 AES_CM_128_HMAC_SHA1_80".into(),
            CryptoError::Missing("key parameters"),
            "key parameters",
        ),
        (
            format!("x1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"),
            CryptoError::BadTag("x1".into()),
            "tag \"x1\"",
        ),
        (
            format!("1234567890 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"),
            CryptoError::BadTag("1234567890".into()),
            "1 to 9 digits",
        ),
        (
            format!("1 AES_256_CM_HMAC_SHA1_80 inline:{KEY}"),
            CryptoError::UnknownSuite("AES_256_CM_HMAC_SHA1_80".into()),
            "suite \"AES_256_CM_HMAC_SHA1_80\" is not supported",
        ),
        (
            format!(
                "1 F8_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4;inline:{KEY}|2^20|2:4 FEC_ORDER=FEC_SRTP"
            ),
            CryptoError::UnknownSuite("F8_128_HMAC_SHA1_80".into()),
            "F8_128",
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4;inline:{KEY}|2^20|2:4"),
            CryptoError::MultipleKeys(2),
            "only a single inline key",
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 outofband:{KEY}"),
            CryptoError::KeyMethod("outofband".into()),
            "only inline",
        ),
        (
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkp!ywjNWhcYD0mXXtxaVBR".into(),
            CryptoError::BadBase64,
            "base64",
        ),
        (
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVA=".into(),
            CryptoError::KeyLength {
                suite: Suite::AesCm128HmacSha1_80,
                expected: 30,
                got: 29,
            },
            "29 bytes, expected 30",
        ),
        (
            format!("1 AEAD_AES_256_GCM inline:{KEY}"),
            CryptoError::KeyLength {
                suite: Suite::AeadAes256Gcm,
                expected: 44,
                got: 30,
            },
            "AEAD_AES_256_GCM is 30 bytes, expected 44",
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^49"),
            CryptoError::BadLifetime("2^49".into()),
            "lifetime \"2^49\"",
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|0"),
            CryptoError::BadLifetime("0".into()),
            "lifetime",
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|256:1"),
            CryptoError::BadMki("256:1".into()),
            "MKI \"256:1\"",
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1:129"),
            CryptoError::BadMki("1:129".into()),
            "MKI",
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|2^10"),
            CryptoError::BadMki("2^10".into()),
            "MKI",
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1|2|3"),
            CryptoError::KeyFields(4),
            "at most key|lifetime|MKI",
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} KDR=1"),
            CryptoError::KeyDerivationRate("1".into()),
            "KDR=1 is not supported",
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} KDR=24"),
            CryptoError::KeyDerivationRate("24".into()),
            "KDR=24",
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} UNENCRYPTED_SRTP"),
            CryptoError::SessionParam("UNENCRYPTED_SRTP".into()),
            "UNENCRYPTED_SRTP\" is not supported",
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} UNAUTHENTICATED_SRTP"),
            CryptoError::SessionParam("UNAUTHENTICATED_SRTP".into()),
            "UNAUTHENTICATED_SRTP",
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} UNENCRYPTED_SRTCP"),
            CryptoError::SessionParam("UNENCRYPTED_SRTCP".into()),
            "UNENCRYPTED_SRTCP",
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} FEC_ORDER=SRTP_FEC"),
            CryptoError::SessionParam("FEC_ORDER=SRTP_FEC".into()),
            "FEC_ORDER=SRTP_FEC",
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} WSH=32"),
            CryptoError::SessionParam("WSH=32".into()),
            "WSH=32",
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} {}", "Z".repeat(100)),
            CryptoError::SessionParam(format!("{}…", "Z".repeat(32))),
            "ZZZZ…\" is not supported",
        ),
    ];
    for (input, want, says) in cases {
        let got = parse_crypto(&input).unwrap_err();
        assert_eq!(got, want, "{input:.80}");
        let text = got.to_string();
        assert!(text.contains(says), "{text:?} should say {says:?}");
        assert!(!text.contains(&KEY[..12]), "{text:?} quotes the key");
        assert!(text.len() < 200, "{text:?} is bounded");
    }
}

#[test]
fn attribute_round_trip() {
    for attr in [
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4",
        "7 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1000",
        "2 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0OD6ChoqOkpaanqKmqqw==",
        "3 AEAD_AES_256_GCM inline:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj+goaKjpKWmp6ipqqs=|9:3",
    ] {
        assert_eq!(parse_crypto(attr).unwrap().to_attribute(), attr);
    }
    let debug = format!(
        "{:?}",
        parse_crypto("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR")
            .unwrap()
    );
    assert!(
        debug.contains("redacted") && !debug.contains("PS1u"),
        "{debug}"
    );
}

/// Twenty SSRCs through one receiver: it keeps [`MAX_SSRCS`], the most
/// recent ones (their replays are still caught); the oldest was forgotten,
/// so its old packet counts as new again — the price of the bound, which
/// only a holder of the key can make anyone pay.
#[test]
fn ssrc_table_is_bounded() {
    for suite in Suite::ALL {
        let key = mk_key(suite, 8);
        let mut tx = SrtpSender::new(&key);
        let mut rx = SrtpReceiver::new(&key);
        let packets: Vec<Vec<u8>> = (0..20u32)
            .map(|ssrc| {
                tx.protect_rtp(&mk_rtp(10, 1000 + ssrc, 0, false, 8))
                    .unwrap()
            })
            .collect();
        for p in &packets {
            rx.unprotect_rtp(p).unwrap();
            assert!(rx.tracked_ssrcs() <= MAX_SSRCS);
        }
        assert_eq!(rx.tracked_ssrcs(), MAX_SSRCS, "{suite}");
        for recent in &packets[20 - MAX_SSRCS..] {
            assert_eq!(
                rx.unprotect_rtp(recent),
                Err(SrtpError::Replayed),
                "{suite}"
            );
        }
        assert!(
            rx.unprotect_rtp(&packets[0]).is_ok(),
            "{suite}: oldest forgotten"
        );
        assert_eq!(rx.tracked_ssrcs(), MAX_SSRCS);
    }
}

#[test]
fn malformed_packets_are_errors() {
    let key = mk_key(Suite::AesCm128HmacSha1_80, 9);
    let mut rx = SrtpReceiver::new(&key);
    let good = SrtpSender::new(&key)
        .protect_rtp(&mk_rtp(1, 1, 0, false, 20))
        .unwrap();
    let mut v1 = good.clone();
    v1[0] = 0x40;
    let mut many_csrcs = good[..24].to_vec();
    many_csrcs[0] = 0x8f;
    let mut long_ext = mk_rtp(1, 1, 0, true, 0);
    long_ext[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
    for (packet, want) in [
        (&[][..], SrtpError::Truncated),
        (&good[..11], SrtpError::Truncated),
        (&good[..12 + 9], SrtpError::Truncated),
        (&v1[..], SrtpError::NotRtp),
        (&many_csrcs[..], SrtpError::Truncated),
        (&long_ext[..], SrtpError::Truncated),
        (&vec![0x80; 70_000][..], SrtpError::TooLarge),
    ] {
        assert_eq!(rx.unprotect_rtp(packet), Err(want), "{packet:.20?}");
    }
    assert_eq!(rx.unprotect_rtcp(&good[..7]), Err(SrtpError::Truncated));
    assert_eq!(rx.unprotect_rtcp(&good[..21]), Err(SrtpError::Truncated));
    assert_eq!(SrtpError::Authentication.reason(), "auth");
    assert_eq!(
        CryptoError::MultipleKeys(2).reason(),
        "unsupported_parameter"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The fuzz target's invariants on arbitrary bytes, and on bytes that
    /// start like an RTP header (so the round trip is exercised).
    #[test]
    fn fuzz_entry_holds(sel in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut data = vec![sel];
        data.extend(&body);
        fuzz_srtp(&data);
        if body.len() >= 12 {
            data[1] = 0x80 | (body[0] & 0x3f);
            fuzz_srtp(&data);
        }
    }
}

/// Per-packet cost of unprotecting a 20 ms G.711 packet (172 bytes RTP),
/// printed, not asserted (debug builds: `cargo test --release` for real
/// numbers). Every packet must decrypt, so the loop measures real work.
#[test]
fn per_packet_cost() {
    const N: u16 = 3000;
    for suite in Suite::ALL {
        let key = mk_key(suite, 10);
        let mut tx = SrtpSender::new(&key);
        let packets: Vec<Vec<u8>> = (0..N)
            .map(|seq| tx.protect_rtp(&mk_rtp(seq, 3, 0, false, 160)).unwrap())
            .collect();
        let mut rx = SrtpReceiver::new(&key);
        let start = Instant::now();
        let mut bytes = 0;
        for p in &packets {
            bytes += rx.unprotect_rtp(p).unwrap().len();
        }
        let ns = start.elapsed().as_nanos() / u128::from(N);
        assert_eq!(bytes, usize::from(N) * 172);
        println!("{suite}: {ns} ns/packet unprotect (172-byte RTP)");
    }
}
