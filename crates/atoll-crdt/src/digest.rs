//! A 128-bit digest of bytes: equal bytes give equal digests on every node
//! and in every run (no random seed). It is for telling copies apart in a
//! consistency check, not for resisting an adversary: two 64-bit lanes of
//! multiply-rotate mixing over 8-byte words, each finished by splitmix64.

const P1: u64 = 0x9e37_79b9_7f4a_7c15;
const P2: u64 = 0xc2b2_ae3d_27d4_eb4f;

fn finish(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The digest of `parts`, read as one string of bytes with each part's
/// length before it (so that `["ab", "c"]` and `["a", "bc"]` differ).
pub fn digest128(parts: &[&[u8]]) -> u128 {
    let (mut a, mut b) = (0x243f_6a88_85a3_08d3u64, 0x1319_8a2e_0370_7344u64);
    let mut word = |w: u64| {
        a = (a ^ w).wrapping_mul(P1).rotate_left(31);
        b = (b ^ w.rotate_left(17)).wrapping_mul(P2).rotate_left(27);
    };
    for part in parts {
        word(part.len() as u64);
        let mut chunks = part.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            word(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            word(u64::from_le_bytes(w) ^ (0xff << 56));
        }
    }
    let hi = finish(a ^ b.rotate_left(7));
    let lo = finish(b ^ a.rotate_left(13) ^ P1);
    (u128::from(hi) << 64) | u128::from(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_and_bytes_are_told_apart() {
        let d = |p: &[&[u8]]| digest128(p);
        assert_eq!(d(&[b"abc"]), d(&[b"abc"]));
        assert_ne!(d(&[b"ab", b"c"]), d(&[b"a", b"bc"]));
        assert_ne!(d(&[b"abc"]), d(&[b"abd"]));
        assert_ne!(d(&[b""]), d(&[b"\0"]));
        assert_ne!(d(&[b"12345678"]), d(&[b"12345679"]));
    }
}
