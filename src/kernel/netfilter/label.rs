//! The conntrack label bit a table sets on the flows it DNATs, one per table: Docker's FORWARD
//! hole (`docker_user`) accepts, and the table's masquerade rules act on, the flows carrying
//! *their own table's* bit only. With one bit for every table, a second installation's accept
//! rule admitted the first's flows after the first was deleted, and its masquerade acted on
//! them (it once hid a planted fault).
//!
//! Derived from the table's name, so that every run, `teardown` and the tests compute the same
//! bit without storing it: the default table `handoff` keeps bit 127 (what every earlier handoff
//! set, so flows that outlive an upgrade keep their meaning); any other name gets
//! `64 + fnv1a32(name) % 63`, a bit in 64..=126. Bits 0..=63 are left to other label users
//! (OVN, for one, uses the low ones).
//!
//! Collisions: 63 bits for any number of names, so two tables can share one. A layout checks
//! the other handoff tables on the host (an `inet` table with a `dispatch` map) and refuses
//! (exit 2, nothing changed) a name whose bit another one has, naming both: pick another
//! `--table`.

use super::DEFAULT_TABLE;
use crate::error::Failure;

/// The bit of the default table, and of every handoff before labels were per table.
pub const DEFAULT_LABEL: u8 = 127;
/// The lowest bit a named table gets.
const FIRST: u8 = 64;
/// How many bits named tables share (64..=126).
const SPAN: u32 = 63;

/// The conntrack label bit of `table`.
pub fn flow_label(table: &str) -> u8 {
    if table == DEFAULT_TABLE {
        return DEFAULT_LABEL;
    }
    let offset = u8::try_from(fnv1a32(table.as_bytes()) % SPAN).unwrap_or(0);
    FIRST + offset
}

/// Refuse `table` when another handoff table among `tables` (every `inet` table on the host;
/// `is_handoffs` tells ours from the rest) has the same bit: exit 2, naming both.
pub fn refuse_clash(
    table: &str,
    tables: &[String],
    is_handoffs: impl Fn(&str) -> bool,
) -> Result<(), Failure> {
    let label = flow_label(table);
    match tables
        .iter()
        .find(|other| *other != table && flow_label(other) == label && is_handoffs(other))
    {
        Some(other) => Err(Failure::input(format!(
            "--table {table}: its flows would carry conntrack label {label}, which handoff's \
             table {other:?} on this host uses already (the bit is derived from the name): \
             pick another --table name"
        ))),
        None => Ok(()),
    }
}

/// The label as the kernel holds it in a `ct label set` rule (the data of its `immediate`): 128
/// bits, bit N at byte N/8, bit N%8.
pub fn bitmap(label: u8) -> [u8; 16] {
    let mut bits = [0; 16];
    bits[usize::from(label / 8)] = 1 << (label % 8);
    bits
}

/// Whether a rule's netlink expressions set `label`: its bitmap is among their bytes. A table
/// laid out by an older handoff (or under another bit) does not, and is laid out again.
pub fn sets(expressions: &[u8], label: u8) -> bool {
    let bits = bitmap(label);
    expressions.windows(bits.len()).any(|window| window == bits)
}

/// FNV-1a, 32 bits: tiny, stable across versions and platforms, and written down everywhere
/// (an operator can compute a table's bit by hand).
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_table_keeps_the_bit_every_earlier_handoff_set() {
        assert_eq!(flow_label("handoff"), 127);
    }

    #[test]
    fn named_tables_get_a_stable_bit_above_the_low_half_and_below_the_default() {
        // Fixed values: a change of the function would move live flows' meaning on upgrade.
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(flow_label("a"), 64 + (0xe40c_292c_u32 % 63) as u8);
        for name in ["blue", "green", "h-1", "handoff2", "x"] {
            let label = flow_label(name);
            assert!((64..=126).contains(&label), "{name}: {label}");
            assert_eq!(label, flow_label(name));
        }
        assert_ne!(flow_label("blue"), flow_label("green"));
    }

    #[test]
    fn a_name_whose_bit_another_handoff_table_has_is_refused_naming_both() {
        let name = |i: u32| format!("t{i}");
        let first = name(0);
        let twin = (1..10_000)
            .map(name)
            .find(|n| flow_label(n) == flow_label(&first))
            .expect("63 bits: a twin within 10,000 names");
        let tables = vec![twin.clone(), "handoff".to_string(), "filter".to_string()];
        let refused = refuse_clash(&first, &tables, |_| true).unwrap_err();
        let message = refused.to_string();
        assert!(
            message.contains(&first) && message.contains(&twin),
            "{message}"
        );
        assert_eq!(refused.code, crate::error::ExitCode::Input);
        // Not a handoff table (no dispatch map): not a clash. Our own name: not a clash.
        assert!(refuse_clash(&first, &tables, |_| false).is_ok());
        assert!(refuse_clash(&twin, &tables, |_| true).is_ok());
    }

    #[test]
    fn the_bitmap_is_the_kernels() {
        // `nft --debug=netlink` shows `ct label set 127` as the words 0 0 0 0x80000000 and
        // `ct label set 64` as 0 0 0x00000001 0, in host (little-endian) order.
        let mut expected = [0; 16];
        expected[15] = 0x80;
        assert_eq!(bitmap(127), expected);
        let mut expected = [0; 16];
        expected[8] = 0x01;
        assert_eq!(bitmap(64), expected);
        let rule = [[1, 2, 3].as_slice(), &bitmap(90), &[4]].concat();
        assert!(sets(&rule, 90));
        assert!(!sets(&rule, 91));
    }
}
