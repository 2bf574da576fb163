//! Port ranges as prefix blocks, the form the POLICY trie matches.

/// The port range `start..=end` as the smallest list of aligned blocks
/// `(value, prefix_len)`, each matching the ports whose `prefix_len` high
/// bits equal `value`'s (so `value`'s low `16 - prefix_len` bits are zero),
/// in increasing order. `(0, 0)` is every port, `(p, 16)` the port `p`.
/// An inverted range (`start > end`) is empty.
///
/// **At most 30 blocks.** The greedy split takes, from `start`, the largest
/// aligned block that fits. Going up, block sizes strictly increase until
/// the block that would cross `end`'s highest differing bit, then strictly
/// decrease: each of the 16 sizes (1 .. 2^15, a block of 2^16 being the
/// whole range) is used at most once on each side, and the two sides cannot
/// both use their largest size without together covering an aligned 2^16
/// block, i.e. the full range. So at most 2 × 15 = 30, reached by `1..=65534`.
///
/// ```
/// use weir_generator::datapath::port_prefixes;
///
/// assert_eq!(port_prefixes(80, 80), vec![(80, 16)]);
/// assert_eq!(port_prefixes(0, 65535), vec![(0, 0)]);
/// assert_eq!(port_prefixes(8080, 8083), vec![(8080, 14)]);
/// assert_eq!(port_prefixes(1, 65534).len(), 30);
/// ```
#[must_use]
pub fn port_prefixes(start: u16, end: u16) -> Vec<(u16, u8)> {
    let mut blocks = Vec::new();
    if start > end {
        return blocks;
    }
    let end = u32::from(end);
    let mut at = u32::from(start);
    while at <= end {
        // The largest power-of-two block aligned at `at` ...
        let mut size_log = if at == 0 {
            16
        } else {
            at.trailing_zeros().min(16)
        };
        // ... that does not pass `end`.
        while at + (1 << size_log) - 1 > end {
            size_log -= 1;
        }
        let value = u16::try_from(at).expect("at <= end <= u16::MAX");
        let prefix = u8::try_from(16 - size_log).expect("size_log <= 16");
        blocks.push((value, prefix));
        at += 1 << size_log;
    }
    blocks
}

/// Whether `port` is in the block `(value, prefix_len)`.
#[must_use]
pub fn block_contains(value: u16, prefix_len: u8, port: u16) -> bool {
    let mask = prefix_mask(prefix_len);
    port & mask == value & mask
}

/// The mask of the `prefix_len` high bits of a port.
#[must_use]
pub const fn prefix_mask(prefix_len: u8) -> u16 {
    if prefix_len == 0 {
        0
    } else if prefix_len >= 16 {
        u16::MAX
    } else {
        !(u16::MAX >> prefix_len)
    }
}
