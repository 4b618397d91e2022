//! A small classic-BPF back end for seccomp: rules in, `sock_filter` instructions out.
//!
//! The front end ([`super::seccomp`]) decides *what* each syscall gets; this module only lays the
//! decisions out as a program: an architecture check, then a binary search over intervals of
//! syscall numbers whose leaves are either a return (numbers that get one answer whatever the
//! arguments, neighbours merged) or a syscall's argument checks, in place. Conditional jumps in
//! classic BPF reach at most 255 instructions, so a search node whose left subtree is longer jumps
//! over it with an unconditional `ja` (32-bit offset).
//!
//! The program is small on purpose: the kernel copies, checks, converts and JIT-compiles it on
//! every `seccomp(SET_MODE_FILTER)`, that is once per run, at a cost that grows with its length
//! (docs/perf/startup.md measures it).

use std::collections::BTreeMap;

/// What the filter answers for a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Let it run.
    Allow,
    /// Fail it with this errno without running it (errno 0 makes it "succeed" without running).
    Errno(u16),
    /// Ask the supervisor (seccomp user notification).
    Notify,
}

impl Action {
    fn ret(self) -> u32 {
        match self {
            Action::Allow => SECCOMP_RET_ALLOW,
            Action::Errno(e) => SECCOMP_RET_ERRNO | u32::from(e),
            Action::Notify => SECCOMP_RET_USER_NOTIF,
        }
    }
}

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;

/// A test on one syscall argument.
///
/// The first two look at the low 32 bits only, because the arguments they are used on are 32-bit
/// `int` or `unsigned int` in the kernel (socket family and type, ioctl command, personality,
/// clone flags, send flags, pids): the kernel ignores the upper half, so the filter must too.
/// [`Cond::High`] looks at the upper half, for pointers (a NULL pointer is zero in both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cond {
    /// `(arg & mask) == value`.
    Eq { arg: u8, mask: u32, value: u32 },
    /// `(arg & mask) != 0`.
    AnySet { arg: u8, mask: u32 },
    /// `(arg >> 32) == value`.
    High { arg: u8, value: u32 },
}

impl Cond {
    /// `arg == value` on the low 32 bits.
    pub(crate) fn eq(arg: u8, value: u32) -> Cond {
        Cond::Eq {
            arg,
            mask: u32::MAX,
            value,
        }
    }

    /// Both conditions that make a pointer argument NULL.
    pub(crate) fn null(arg: u8) -> [Cond; 2] {
        [Cond::eq(arg, 0), Cond::High { arg, value: 0 }]
    }
}

/// If every condition holds, answer `action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Check {
    pub(crate) all: Vec<Cond>,
    pub(crate) action: Action,
}

/// Everything the filter says about one syscall: checks in order (first match wins), then a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyscallRule {
    pub(crate) checks: Vec<Check>,
    pub(crate) default: Action,
}

impl SyscallRule {
    /// The same answer whatever the arguments.
    pub(crate) fn always(action: Action) -> SyscallRule {
        SyscallRule {
            checks: Vec::new(),
            default: action,
        }
    }
}

/// Everything the program needs to know.
pub(crate) struct FilterSpec {
    /// `AUDIT_ARCH_*` of the native ABI; any other ABI gets `foreign_abi`.
    pub(crate) arch: u32,
    /// Syscall numbers at or above this (x32 on x86_64) get `foreign_abi`.
    pub(crate) nr_limit: Option<u32>,
    pub(crate) foreign_abi: Action,
    pub(crate) rules: BTreeMap<u32, SyscallRule>,
    /// Answer for syscalls without a rule.
    pub(crate) otherwise: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Label(usize);

enum Insn {
    Stmt {
        code: u16,
        k: u32,
    },
    /// Conditional jump; `None` is "fall through to the next instruction".
    Jump {
        code: u16,
        k: u32,
        jt: Option<Label>,
        jf: Option<Label>,
    },
    Bind(Label),
}

struct Asm {
    insns: Vec<Insn>,
    labels: usize,
}

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_ALU_AND_K: u16 = 0x04 | 0x50;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_JMP_JSET_K: u16 = 0x05 | 0x40;
const BPF_RET_K: u16 = 0x06;

/// Offsets into `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

impl Asm {
    fn new() -> Asm {
        Asm {
            insns: Vec::new(),
            labels: 0,
        }
    }

    fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    fn bind(&mut self, l: Label) {
        self.insns.push(Insn::Bind(l));
    }

    fn load(&mut self, off: u32) {
        self.insns.push(Insn::Stmt {
            code: BPF_LD_W_ABS,
            k: off,
        });
    }

    fn and(&mut self, mask: u32) {
        self.insns.push(Insn::Stmt {
            code: BPF_ALU_AND_K,
            k: mask,
        });
    }

    fn ret(&mut self, a: Action) {
        self.insns.push(Insn::Stmt {
            code: BPF_RET_K,
            k: a.ret(),
        });
    }

    fn jump(&mut self, code: u16, k: u32, jt: Option<Label>, jf: Option<Label>) {
        self.insns.push(Insn::Jump { code, k, jt, jf });
    }

    fn finish(self) -> Result<Vec<libc::sock_filter>, String> {
        let mut at = vec![usize::MAX; self.labels];
        let mut pc = 0;
        for i in &self.insns {
            match i {
                Insn::Bind(l) => at[l.0] = pc,
                _ => pc += 1,
            }
        }
        if pc > usize::from(u16::MAX) {
            return Err(format!("seccomp program too long ({pc} instructions)"));
        }
        let mut out = Vec::with_capacity(pc);
        let rel = |from: usize, to: Option<Label>| -> Result<usize, String> {
            match to {
                None => Ok(0),
                Some(l) => {
                    let target = at[l.0];
                    if target == usize::MAX || target <= from {
                        return Err("seccomp program jumps backwards or to an unbound label".into());
                    }
                    Ok(target - from - 1)
                }
            }
        };
        for i in self.insns {
            let pc = out.len();
            match i {
                Insn::Bind(_) => continue,
                Insn::Stmt { code, k } => out.push(libc::sock_filter {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                }),
                Insn::Jump { code, k, jt, jf } => {
                    let short = |d: usize| {
                        u8::try_from(d).map_err(|_| {
                            "seccomp rule block longer than a conditional jump can span".to_string()
                        })
                    };
                    out.push(libc::sock_filter {
                        code,
                        jt: short(rel(pc, jt)?)?,
                        jf: short(rel(pc, jf)?)?,
                        k,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Lays out `spec` as a seccomp BPF program.
pub(crate) fn compile(spec: &FilterSpec) -> Result<Vec<libc::sock_filter>, String> {
    let mut a = Asm::new();
    let native = a.label();
    a.load(OFF_ARCH);
    a.jump(BPF_JMP_JEQ_K, spec.arch, Some(native), None);
    a.ret(spec.foreign_abi);
    a.bind(native);
    a.load(OFF_NR);
    if let Some(limit) = spec.nr_limit {
        let ok = a.label();
        a.jump(BPF_JMP_JGE_K, limit, None, Some(ok));
        a.ret(spec.foreign_abi);
        a.bind(ok);
    }
    let mut prog = a.finish()?;
    prog.extend(tree(&intervals(spec))?);
    if prog.len() > usize::from(u16::MAX) {
        return Err(format!(
            "seccomp program too long ({} instructions)",
            prog.len()
        ));
    }
    Ok(prog)
}

/// What the syscalls of one interval of numbers get.
#[derive(Clone, Copy)]
enum Leaf<'a> {
    /// The same answer whatever the arguments.
    Ret(Action),
    /// Argument checks first.
    Rule(&'a SyscallRule),
}

/// The syscall numbers cut into intervals, each `(first number, what it gets)`, from 0 up; the
/// last one runs to the end. Neighbours that get the same answer regardless of arguments share
/// one interval, so the search below has fewer leaves than there are rules.
fn intervals(spec: &FilterSpec) -> Vec<(u32, Leaf<'_>)> {
    fn push<'a>(out: &mut Vec<(u32, Leaf<'a>)>, first: u32, leaf: Leaf<'a>) {
        if let (Some((_, Leaf::Ret(prev))), Leaf::Ret(now)) = (out.last(), leaf) {
            if *prev == now {
                return;
            }
        }
        out.push((first, leaf));
    }
    let mut out = Vec::with_capacity(2 * spec.rules.len() + 1);
    let mut next: u64 = 0;
    for (&nr, rule) in &spec.rules {
        if u64::from(nr) > next {
            push(&mut out, next as u32, Leaf::Ret(spec.otherwise));
        }
        let leaf = if rule.checks.is_empty() {
            Leaf::Ret(rule.default)
        } else {
            Leaf::Rule(rule)
        };
        push(&mut out, nr, leaf);
        next = u64::from(nr) + 1;
    }
    if next <= u64::from(u32::MAX) {
        push(&mut out, next as u32, Leaf::Ret(spec.otherwise));
    }
    out
}

/// A binary search over `intervals` (the accumulator holds the syscall number), each leaf's code
/// in place. Built bottom-up, so that every subtree's length is known: a node jumps over its left
/// subtree directly when a conditional jump reaches that far (255 instructions), and through an
/// unconditional `ja` otherwise.
fn tree(intervals: &[(u32, Leaf<'_>)]) -> Result<Vec<libc::sock_filter>, String> {
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    match intervals {
        [] => Err("seccomp program without syscall intervals".into()),
        [(_, Leaf::Ret(action))] => Ok(vec![stmt(BPF_RET_K, action.ret())]),
        [(_, Leaf::Rule(rule))] => rule_block(rule),
        _ => {
            let mid = intervals.len() / 2;
            let left = tree(&intervals[..mid])?;
            let right = tree(&intervals[mid..])?;
            let boundary = intervals[mid].0;
            let mut out = Vec::with_capacity(2 + left.len() + right.len());
            match u8::try_from(left.len()) {
                Ok(skip) => out.push(libc::sock_filter {
                    code: BPF_JMP_JGE_K,
                    jt: skip,
                    jf: 0,
                    k: boundary,
                }),
                Err(_) => {
                    out.push(libc::sock_filter {
                        code: BPF_JMP_JGE_K,
                        jt: 0,
                        jf: 1,
                        k: boundary,
                    });
                    let skip = u32::try_from(left.len()).map_err(|e| e.to_string())?;
                    out.push(stmt(BPF_JMP_JA, skip));
                }
            }
            out.extend(left);
            out.extend(right);
            Ok(out)
        }
    }
}

/// The argument checks of one syscall, in order (first match wins), then its default.
fn rule_block(rule: &SyscallRule) -> Result<Vec<libc::sock_filter>, String> {
    let mut a = Asm::new();
    for check in &rule.checks {
        let next = a.label();
        for cond in &check.all {
            match *cond {
                Cond::Eq { arg, mask, value } => {
                    a.load(OFF_ARGS + 8 * u32::from(arg));
                    if mask != u32::MAX {
                        a.and(mask);
                    }
                    a.jump(BPF_JMP_JEQ_K, value, None, Some(next));
                }
                Cond::AnySet { arg, mask } => {
                    a.load(OFF_ARGS + 8 * u32::from(arg));
                    a.jump(BPF_JMP_JSET_K, mask, None, Some(next));
                }
                Cond::High { arg, value } => {
                    // seccomp_data.args are u64 in native (little-endian) order.
                    a.load(OFF_ARGS + 8 * u32::from(arg) + 4);
                    a.jump(BPF_JMP_JEQ_K, value, None, Some(next));
                }
            }
        }
        a.ret(check.action);
        a.bind(next);
    }
    a.ret(rule.default);
    a.finish()
}

/// What `spec` says for one `seccomp_data`, read straight from the rules (no program): the
/// reference the compiled layout is tested against.
#[cfg(test)]
pub(crate) fn evaluate(spec: &FilterSpec, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    if arch != spec.arch || spec.nr_limit.is_some_and(|l| nr >= l) {
        return spec.foreign_abi.ret();
    }
    let Some(rule) = spec.rules.get(&nr) else {
        return spec.otherwise.ret();
    };
    let holds = |c: &Cond| match *c {
        Cond::Eq { arg, mask, value } => (args[usize::from(arg)] as u32) & mask == value,
        Cond::AnySet { arg, mask } => (args[usize::from(arg)] as u32) & mask != 0,
        Cond::High { arg, value } => (args[usize::from(arg)] >> 32) as u32 == value,
    };
    rule.checks
        .iter()
        .find(|c| c.all.iter().all(holds))
        .map_or(rule.default, |c| c.action)
        .ret()
}

/// Argument vectors that satisfy each check of `spec` (and all zeros): with [`evaluate`], they
/// reach every branch of every rule.
#[cfg(test)]
pub(crate) fn probe_args(spec: &FilterSpec) -> Vec<[u64; 6]> {
    let mut out = vec![[0u64; 6]];
    for check in spec.rules.values().flat_map(|r| &r.checks) {
        let mut args = [0u64; 6];
        for cond in &check.all {
            match *cond {
                Cond::Eq { arg, value, .. } => {
                    let a = &mut args[usize::from(arg)];
                    *a = (*a & !0xffff_ffff) | u64::from(value);
                }
                Cond::AnySet { arg, mask } => args[usize::from(arg)] |= u64::from(mask),
                Cond::High { arg, value } => {
                    let a = &mut args[usize::from(arg)];
                    *a = (*a & 0xffff_ffff) | (u64::from(value) << 32);
                }
            }
        }
        out.push(args);
    }
    out
}

/// Runs a compiled program against one `seccomp_data`, as the kernel would. Tests use it to check
/// the layout against the rules without loading anything into the kernel.
#[cfg(test)]
pub(crate) fn interpret(prog: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let word = |off: u32| -> u32 {
        match off {
            OFF_NR => nr,
            OFF_ARCH => arch,
            o if o >= OFF_ARGS => {
                let i = ((o - OFF_ARGS) / 8) as usize;
                if (o - OFF_ARGS) % 8 == 0 {
                    args[i] as u32
                } else {
                    (args[i] >> 32) as u32
                }
            }
            _ => 0,
        }
    };
    let (mut acc, mut pc) = (0u32, 0usize);
    loop {
        let i = prog[pc];
        pc += 1;
        match i.code {
            BPF_LD_W_ABS => acc = word(i.k),
            BPF_ALU_AND_K => acc &= i.k,
            BPF_JMP_JA => pc += i.k as usize,
            BPF_JMP_JEQ_K => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
            BPF_JMP_JGE_K => pc += usize::from(if acc >= i.k { i.jt } else { i.jf }),
            BPF_JMP_JSET_K => pc += usize::from(if acc & i.k != 0 { i.jt } else { i.jf }),
            BPF_RET_K => return i.k,
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCH: u32 = 0xc000_003e;

    fn spec(rules: BTreeMap<u32, SyscallRule>) -> FilterSpec {
        FilterSpec {
            arch: ARCH,
            nr_limit: Some(0x4000_0000),
            foreign_abi: Action::Errno(38),
            rules,
            otherwise: Action::Allow,
        }
    }

    #[test]
    fn every_number_reaches_its_own_rule_in_a_large_table() {
        let rules: BTreeMap<u32, SyscallRule> = (0..300)
            .filter(|n| n % 3 == 0)
            .map(|n| (n, SyscallRule::always(Action::Errno((n % 200) as u16 + 1))))
            .collect();
        let prog = compile(&spec(rules.clone())).unwrap();
        for nr in 0..320u32 {
            let want = rules.get(&nr).map_or(Action::Allow, |r| r.default).ret();
            assert_eq!(interpret(&prog, ARCH, nr, [0; 6]), want, "nr {nr}");
        }
    }

    #[test]
    fn a_left_subtree_longer_than_a_conditional_jump_is_jumped_over() {
        // 200 syscalls with argument checks: the top of the search has left subtrees of more
        // than 255 instructions.
        let rules: BTreeMap<u32, SyscallRule> = (0..200)
            .map(|n| {
                (
                    2 * n,
                    SyscallRule {
                        checks: vec![Check {
                            all: vec![Cond::eq(0, n), Cond::eq(1, n + 1)],
                            action: Action::Errno((n % 200) as u16 + 1),
                        }],
                        default: Action::Notify,
                    },
                )
            })
            .collect();
        let spec = spec(rules);
        let prog = compile(&spec).unwrap();
        assert!(
            prog.iter().any(|i| i.code == BPF_JMP_JA),
            "the layout never needed a long jump; make the table larger"
        );
        for nr in 0..420u32 {
            for args in [
                [0; 6],
                [u64::from(nr / 2), u64::from(nr / 2) + 1, 0, 0, 0, 0],
            ] {
                assert_eq!(
                    interpret(&prog, ARCH, nr, args),
                    evaluate(&spec, ARCH, nr, args),
                    "nr {nr} args {args:?}"
                );
            }
        }
    }

    #[test]
    fn neighbours_with_the_same_answer_share_one_leaf() {
        let eperm = SyscallRule::always(Action::Errno(1));
        let rules: BTreeMap<u32, SyscallRule> = (10..=20).map(|n| (n, eperm.clone())).collect();
        let spec = spec(rules);
        let prog = compile(&spec).unwrap();
        // Arch and x32 checks (6), then two search nodes over three leaves: below 10, 10 to
        // 20, above 20.
        assert_eq!(prog.len(), 11, "{} instructions", prog.len());
        for nr in 0..40u32 {
            assert_eq!(
                interpret(&prog, ARCH, nr, [0; 6]),
                evaluate(&spec, ARCH, nr, [0; 6]),
                "nr {nr}"
            );
        }
    }

    #[test]
    fn foreign_abi_and_x32_numbers_are_refused() {
        let prog = compile(&spec(BTreeMap::new())).unwrap();
        assert_eq!(
            interpret(&prog, 0x4000_0003, 1, [0; 6]),
            SECCOMP_RET_ERRNO | 38
        );
        assert_eq!(
            interpret(&prog, ARCH, 0x4000_0001, [0; 6]),
            SECCOMP_RET_ERRNO | 38
        );
        assert_eq!(interpret(&prog, ARCH, 1, [0; 6]), SECCOMP_RET_ALLOW);
    }

    #[test]
    fn argument_checks_look_at_the_low_word_only() {
        let mut rules = BTreeMap::new();
        rules.insert(
            41,
            SyscallRule {
                checks: vec![
                    Check {
                        all: vec![Cond::eq(0, 1)],
                        action: Action::Allow,
                    },
                    Check {
                        all: vec![
                            Cond::eq(0, 2),
                            Cond::Eq {
                                arg: 1,
                                mask: 0xf,
                                value: 1,
                            },
                        ],
                        action: Action::Notify,
                    },
                ],
                default: Action::Errno(13),
            },
        );
        rules.insert(
            56,
            SyscallRule {
                checks: vec![Check {
                    all: vec![Cond::AnySet {
                        arg: 0,
                        mask: 0x7e02_0000,
                    }],
                    action: Action::Errno(1),
                }],
                default: Action::Allow,
            },
        );
        let prog = compile(&spec(rules)).unwrap();
        let run = |nr, a0: u64, a1: u64| interpret(&prog, ARCH, nr, [a0, a1, 0, 0, 0, 0]);
        assert_eq!(run(41, 1, 0), SECCOMP_RET_ALLOW);
        assert_eq!(run(41, 1 | (7 << 32), 0), SECCOMP_RET_ALLOW);
        assert_eq!(run(41, 2, 0x80801), SECCOMP_RET_USER_NOTIF);
        assert_eq!(run(41, 2, 2), SECCOMP_RET_ERRNO | 13);
        assert_eq!(run(41, 10, 1), SECCOMP_RET_ERRNO | 13);
        assert_eq!(run(56, 0x0120_0011, 0), SECCOMP_RET_ALLOW);
        assert_eq!(run(56, 0x1000_0000, 0), SECCOMP_RET_ERRNO | 1);
        assert_eq!(run(56, 0x20000, 0), SECCOMP_RET_ERRNO | 1);
    }

    #[test]
    fn a_null_pointer_check_looks_at_both_halves() {
        let mut rules = BTreeMap::new();
        rules.insert(
            302,
            SyscallRule {
                checks: vec![Check {
                    all: Cond::null(2).to_vec(),
                    action: Action::Allow,
                }],
                default: Action::Notify,
            },
        );
        let prog = compile(&spec(rules)).unwrap();
        let run = |a2: u64| interpret(&prog, ARCH, 302, [0, 0, a2, 0, 0, 0]);
        assert_eq!(run(0), SECCOMP_RET_ALLOW);
        assert_eq!(run(0x7fff_0000_0000), SECCOMP_RET_USER_NOTIF);
        assert_eq!(run(0x1000), SECCOMP_RET_USER_NOTIF);
    }
}
