//! A socket filter for conntrack events: let through only the events of flows whose reply
//! comes from one of the watched backends.
//!
//! Why: events are host-wide. A drain watching one old backend would otherwise read (and its
//! socket buffer hold) every event of every flow on the host — at thousands of new connections
//! a second, tens of thousands of events a second, enough to overrun the buffer and force a
//! full dump. The kernel runs this classic BPF program on each event before queueing it.
//!
//! The netlink attribute extensions (`SKF_AD_NLATTR`) that libnetfilter_conntrack uses return
//! nothing here (they give up on non-linear buffers, which event messages are on current
//! kernels), so the program reads the message by offset. ctnetlink writes an event as
//! nlmsghdr (16 bytes), nfgenmsg (4), CTA_TUPLE_ORIG, then CTA_TUPLE_REPLY, whose first child
//! is CTA_TUPLE_IP, whose first child is CTA_IP_V4_SRC or CTA_IP_V6_SRC — the backend's
//! address:
//!
//! ```text
//!  ldb [22]; jeq #1 else reject       first attribute is CTA_TUPLE_ORIG
//!  ldb [21]; lsh #8; tax; ldb [20]    its length (little-endian u16) ...
//!  add x; add #3; and #~3; tax        ... aligned: X = where CTA_TUPLE_REPLY starts - 20
//!  ldb [x+22]; jeq #2 else reject     CTA_TUPLE_REPLY
//!  ldb [x+26]; jeq #1 else reject     CTA_TUPLE_IP
//!  ldb [x+30]; jeq #1 else v6         CTA_IP_V4_SRC ...
//!  ldb [x+28]; jeq #8 else reject     ... an attribute of 8 bytes
//!  ld  [x+32]                         the address
//!  jeq #backend_1, accept             one per IPv4 backend
//!  ...
//!  ja reject
//!  v6: jeq #3 else reject             CTA_IP_V6_SRC ...
//!  ldb [x+28]; jeq #20 else reject    ... an attribute of 20 bytes
//!  ld [x+32]; jeq #word0 else next    one block of four words per IPv6 backend
//!  ld [x+36]; jeq #word1 else next
//!  ld [x+40]; jeq #word2 else next
//!  ld [x+44]; jeq #word3, accept
//!  next: ...
//!  reject: ret #0
//!  accept: ret #-1
//! ```
//!
//! Anything else (a layout this does not expect) is dropped. That can cost speed, never
//! correctness: the drain's per-flow lookups and periodic dumps still see every flow end, and
//! the kernel tests check that a watched backend's events do pass.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use anyhow::Result;
use netlink_sys::Socket;

/// Where the attributes of a conntrack message start: nlmsghdr (16) + nfgenmsg (4).
const ATTRIBUTES: u32 = 20;
/// Attribute types (linux/netfilter/nfnetlink_conntrack.h).
const CTA_TUPLE_ORIG: u32 = 1;
const CTA_TUPLE_REPLY: u32 = 2;
const CTA_TUPLE_IP: u32 = 1;
const CTA_IP_V4_SRC: u32 = 1;
const CTA_IP_V6_SRC: u32 = 3;
/// An attribute header (4) and an IPv4 address (4), or an IPv6 one (16).
const IPV4_ATTRIBUTE_LEN: u32 = 8;
const IPV6_ATTRIBUTE_LEN: u32 = 20;

// Classic BPF (linux/filter.h, linux/bpf_common.h).
const BPF_LD: u16 = 0x00;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_MISC: u16 = 0x07;
const BPF_W: u16 = 0x00;
const BPF_B: u16 = 0x10;
const BPF_ABS: u16 = 0x20;
const BPF_IND: u16 = 0x40;
const BPF_ADD: u16 = 0x00;
const BPF_LSH: u16 = 0x60;
const BPF_AND: u16 = 0x50;
const BPF_JA: u16 = 0x00;
const BPF_JEQ: u16 = 0x10;
const BPF_K: u16 = 0x00;
const BPF_X: u16 = 0x08;
const BPF_TAX: u16 = 0x00;

/// Conditional jumps are one byte: a longer list of backends is not filtered (every event
/// passes). The program also gives up on a list whose jumps do not fit (many IPv6 backends).
const MAX_BACKENDS: usize = 200;

/// One instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const fn op(code: u16, k: u32) -> Instruction {
    Instruction {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// Where a jump goes: the next instruction, or a label.
#[derive(Clone, Copy)]
enum Target {
    Next,
    Label(usize),
}

/// A program being written: instructions whose jumps name labels, resolved at the end.
#[derive(Default)]
struct Assembler {
    program: Vec<(u16, Target, Target, u32)>,
    labels: Vec<Option<usize>>,
}

impl Assembler {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    fn place(&mut self, label: usize) {
        self.labels[label] = Some(self.program.len());
    }

    fn op(&mut self, code: u16, k: u32) {
        self.program.push((code, Target::Next, Target::Next, k));
    }

    /// `jeq #value`: to `equal` if A is `value`, else to `otherwise`.
    fn jeq(&mut self, value: u32, equal: Target, otherwise: Target) {
        self.program
            .push((BPF_JMP | BPF_JEQ | BPF_K, equal, otherwise, value));
    }

    /// Load `load`, and go to `otherwise` unless it is `value`.
    fn expect(&mut self, load: Instruction, value: u32, otherwise: usize) {
        self.op(load.code, load.k);
        self.jeq(value, Target::Next, Target::Label(otherwise));
    }

    fn jump(&mut self, to: usize) {
        self.program
            .push((BPF_JMP | BPF_JA, Target::Label(to), Target::Next, 0));
    }

    /// The program; `None` when a conditional jump is too far for its byte.
    fn finish(self) -> Option<Vec<Instruction>> {
        let offset = |pc: usize, target: Target| match target {
            Target::Next => Some(0),
            Target::Label(label) => self.labels[label]?.checked_sub(pc + 1),
        };
        let mut program = Vec::with_capacity(self.program.len());
        for (pc, &(code, jt, jf, k)) in self.program.iter().enumerate() {
            program.push(if code == BPF_JMP | BPF_JA {
                op(code, u32::try_from(offset(pc, jt)?).ok()?)
            } else {
                Instruction {
                    code,
                    jt: u8::try_from(offset(pc, jt)?).ok()?,
                    jf: u8::try_from(offset(pc, jf)?).ok()?,
                    k,
                }
            });
        }
        Some(program)
    }
}

/// The program accepting events whose reply source is one of `backends`; `None` (no filter)
/// when there are none or too many to fit the jumps.
pub fn reply_source_in(backends: &[IpAddr]) -> Option<Vec<Instruction>> {
    if backends.is_empty() || backends.len() > MAX_BACKENDS {
        return None;
    }
    let mut asm = Assembler::default();
    let (reject, accept, v6) = (asm.label(), asm.label(), asm.label());
    let byte_at = |k: u32| op(BPF_LD | BPF_B | BPF_ABS, k);
    // X + ATTRIBUTES is where CTA_TUPLE_REPLY starts.
    let byte_past_x = |k: u32| op(BPF_LD | BPF_B | BPF_IND, ATTRIBUTES + k);
    let word_past_x = |k: u32| op(BPF_LD | BPF_W | BPF_IND, ATTRIBUTES + k);
    asm.expect(byte_at(ATTRIBUTES + 2), CTA_TUPLE_ORIG, reject);
    for (code, k) in [
        (BPF_LD | BPF_B | BPF_ABS, ATTRIBUTES + 1),
        (BPF_ALU | BPF_LSH | BPF_K, 8),
        (BPF_MISC | BPF_TAX, 0),
        (BPF_LD | BPF_B | BPF_ABS, ATTRIBUTES),
        (BPF_ALU | BPF_ADD | BPF_X, 0),
        (BPF_ALU | BPF_ADD | BPF_K, 3),
        (BPF_ALU | BPF_AND | BPF_K, !3),
        (BPF_MISC | BPF_TAX, 0),
    ] {
        asm.op(code, k);
    }
    asm.expect(byte_past_x(2), CTA_TUPLE_REPLY, reject);
    asm.expect(byte_past_x(4 + 2), CTA_TUPLE_IP, reject);
    asm.op(BPF_LD | BPF_B | BPF_IND, ATTRIBUTES + 8 + 2);
    asm.jeq(CTA_IP_V4_SRC, Target::Next, Target::Label(v6));
    asm.expect(byte_past_x(8), IPV4_ATTRIBUTE_LEN, reject);
    let load = word_past_x(12);
    asm.op(load.code, load.k);
    for backend in backends {
        if let IpAddr::V4(v4) = backend {
            asm.jeq(u32::from(*v4), Target::Label(accept), Target::Next);
        }
    }
    asm.jump(reject);
    asm.place(v6);
    asm.jeq(CTA_IP_V6_SRC, Target::Next, Target::Label(reject));
    asm.expect(byte_past_x(8), IPV6_ATTRIBUTE_LEN, reject);
    for backend in backends {
        let IpAddr::V6(v6) = backend else { continue };
        let next = asm.label();
        let words: Vec<u32> = v6
            .octets()
            .chunks(4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        for (i, word) in words.iter().enumerate() {
            let load = word_past_x(12 + 4 * i as u32);
            asm.op(load.code, load.k);
            let equal = match i {
                3 => Target::Label(accept),
                _ => Target::Next,
            };
            asm.jeq(*word, equal, Target::Label(next));
        }
        asm.place(next);
    }
    asm.place(reject);
    asm.op(BPF_RET | BPF_K, 0);
    asm.place(accept);
    asm.op(BPF_RET | BPF_K, u32::MAX);
    asm.finish()
}

/// Where a netlink message says who caused it: `nlmsg_pid`, 0 for the kernel itself.
const NLMSG_PID: u32 = 12;

/// The program accepting only events that a userspace request caused (a `conntrack -D`, a
/// ctnetlink delete by dockerd or by handoff): the kernel stamps them with the requester's
/// port id. For captures of who deleted what (`handoff-netkit ct-requests`); the volume is
/// tiny next to the kernel's own events, so such a capture does not overrun.
pub fn requested_by_userspace() -> Vec<Instruction> {
    vec![
        op(BPF_LD | BPF_W | BPF_ABS, NLMSG_PID),
        Instruction {
            code: BPF_JMP | BPF_JEQ | BPF_K,
            jt: 0,
            jf: 1,
            k: 0,
        },
        op(BPF_RET | BPF_K, 0),
        op(BPF_RET | BPF_K, u32::MAX),
    ]
}

/// Attach `program` to `socket` (SO_ATTACH_FILTER).
pub fn attach(socket: &Socket, program: &[Instruction]) -> Result<()> {
    let fprog = nix::libc::sock_fprog {
        len: u16::try_from(program.len())?,
        filter: program.as_ptr() as *mut nix::libc::sock_filter,
    };
    // SAFETY: `Instruction` has the layout of `struct sock_filter`; the kernel copies the
    // program during the call, while `program` and `fprog` are alive.
    let result = unsafe {
        nix::libc::setsockopt(
            socket.as_raw_fd(),
            nix::libc::SOL_SOCKET,
            nix::libc::SO_ATTACH_FILTER,
            (&fprog as *const nix::libc::sock_fprog).cast(),
            std::mem::size_of::<nix::libc::sock_fprog>() as nix::libc::socklen_t,
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::conntrack::decode::tests::{
        datagram, dnat_flow6_attributes, dnat_flow_attributes,
    };
    use netlink_packet_netfilter::conntrack::ConntrackMessage;

    /// The classic BPF the program uses, run over `packet` as the kernel would (a load past
    /// the end rejects).
    fn run(program: &[Instruction], packet: &[u8]) -> bool {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let byte = |at: u32| packet.get(at as usize).copied().map(u32::from);
        loop {
            let i = program[pc];
            pc += 1;
            let loaded = match i.code {
                c if c == BPF_LD | BPF_B | BPF_ABS => Some(byte(i.k)),
                c if c == BPF_LD | BPF_W | BPF_ABS => {
                    Some((0..4).try_fold(0u32, |word, n| byte(i.k + n).map(|b| (word << 8) | b)))
                }
                c if c == BPF_LD | BPF_B | BPF_IND => Some(byte(x + i.k)),
                c if c == BPF_LD | BPF_W | BPF_IND => Some(
                    (0..4).try_fold(0u32, |word, n| byte(x + i.k + n).map(|b| (word << 8) | b)),
                ),
                _ => None,
            };
            match (i.code, loaded) {
                (_, Some(None)) => return false,
                (_, Some(Some(value))) => a = value,
                (c, None) if c == BPF_ALU | BPF_LSH | BPF_K => a <<= i.k,
                (c, None) if c == BPF_ALU | BPF_ADD | BPF_X => a = a.wrapping_add(x),
                (c, None) if c == BPF_ALU | BPF_ADD | BPF_K => a = a.wrapping_add(i.k),
                (c, None) if c == BPF_ALU | BPF_AND | BPF_K => a &= i.k,
                (c, None) if c == BPF_MISC | BPF_TAX => x = a,
                (c, None) if c == BPF_JMP | BPF_JA => pc += i.k as usize,
                (c, None) if c == BPF_JMP | BPF_JEQ | BPF_K => {
                    pc += usize::from(if a == i.k { i.jt } else { i.jf });
                }
                (c, None) if c == BPF_RET | BPF_K => return i.k != 0,
                (other, None) => panic!("unexpected instruction {other:#x}"),
            }
        }
    }

    /// Whether the program watching `backends` lets `event` through.
    fn passes(event: &[u8], backends: &[&str]) -> bool {
        let backends: Vec<IpAddr> = backends.iter().map(|a| a.parse().unwrap()).collect();
        run(&reply_source_in(&backends).unwrap(), event)
    }

    #[test]
    fn only_events_of_the_watched_backends_pass() {
        // An event as ctnetlink writes it: answered by 10.0.1.11.
        let event = datagram(ConntrackMessage::New(dnat_flow_attributes(3)));
        let watching = |backends: &[&str]| passes(&event, backends);
        assert!(watching(&["10.0.1.11"]));
        assert!(watching(&["172.17.0.2", "fd00::b", "10.0.1.11"]));
        assert!(!watching(&["10.0.1.12"]));
        assert!(!watching(&["fd00::b"]));
        // A message cut short, or of another layout, is dropped rather than misread.
        let program = reply_source_in(&["10.0.1.11".parse().unwrap()]).unwrap();
        assert!(!run(&program, &event[..40]));
        let mut other = event.clone();
        other[22] = 3;
        assert!(!run(&program, &other));
    }

    #[test]
    fn only_events_of_the_watched_ipv6_backends_pass() {
        let event = datagram(ConntrackMessage::New(dnat_flow6_attributes(3)));
        let watching = |backends: &[&str]| passes(&event, backends);
        assert!(watching(&["fd00:1::11"]));
        assert!(watching(&["10.0.1.11", "fd00:1::12", "fd00:1::11"]));
        // Equal in every word but the last, or in the last alone: not the backend.
        assert!(!watching(&["fd00:1::12"]));
        assert!(!watching(&["fd01:1::11"]));
        assert!(!watching(&["10.0.1.11"]));
    }

    #[test]
    fn no_filter_for_no_backend_or_too_many() {
        assert_eq!(reply_source_in(&[]), None);
        let many: Vec<IpAddr> = (0..=MAX_BACKENDS as u32)
            .map(|n| IpAddr::from(std::net::Ipv4Addr::from(n)))
            .collect();
        assert_eq!(reply_source_in(&many), None);
        assert!(reply_source_in(&many[..MAX_BACKENDS]).is_some());
        // IPv6 backends take 8 instructions each: the jumps past 31 of them do not fit.
        let many6: Vec<IpAddr> = (0..40u128)
            .map(|n| IpAddr::from(std::net::Ipv6Addr::from(n)))
            .collect();
        assert!(reply_source_in(&many6[..20]).is_some());
        assert_eq!(reply_source_in(&many6), None);
    }

    #[test]
    fn only_events_a_userspace_request_caused_pass() {
        let mut event = datagram(ConntrackMessage::Delete(dnat_flow_attributes(3)));
        let program = requested_by_userspace();
        event[12..16].copy_from_slice(&0u32.to_ne_bytes());
        assert!(!run(&program, &event), "the kernel's own event");
        event[12..16].copy_from_slice(&5578u32.to_ne_bytes());
        assert!(run(&program, &event), "dockerd's delete");
    }
}
