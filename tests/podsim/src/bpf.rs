//! Classic BPF for seccomp: a tiny assembler with labels, and the compiler from [`crate::profile`].
//!
//! The compiled filter checks the architecture, then finds the syscall number by binary search over
//! runs of numbers that share a decision, so a syscall costs about log2(runs) comparisons instead of
//! one per allowed syscall. Conditional jumps only reach 255 instructions, so every branch of the
//! search jumps to its right half through an unconditional `ja` (32-bit offset).

use std::mem::offset_of;

use libc::{c_long, seccomp_data, sock_filter};

use crate::error::{Error, Result};
use crate::profile::{self, ArgCmp, Op, Rule};
use crate::syscalls;

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// `seccomp_data` offsets of the fields the filters read.
pub const NR: u32 = offset_of!(seccomp_data, nr) as u32;
/// Offset of `seccomp_data.arch`.
pub const ARCH: u32 = offset_of!(seccomp_data, arch) as u32;

/// Offsets of the low and high 32-bit halves of argument `index` (little-endian layout).
pub fn arg_halves(index: u8) -> (u32, u32) {
    let low = offset_of!(seccomp_data, args) as u32 + 8 * u32::from(index);
    (low, low + 4)
}

/// The action that returns `errno` to the caller without running the syscall.
pub fn errno_action(errno: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)
}

/// A jump target: the next instruction, or a label.
#[derive(Clone, Copy, Debug)]
pub enum To {
    /// Fall through.
    Next,
    /// Jump to a label.
    Label(Label),
}

/// A position in the program, bound with [`Asm::bind`].
#[derive(Clone, Copy, Debug)]
pub struct Label(usize);

enum Item {
    Stmt(u16, u32),
    Jump(u16, u32, To, To),
    Ja(Label),
    Bind(Label),
}

/// Builds a BPF program with symbolic jump targets.
#[derive(Default)]
pub struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    /// A new label, to be bound once.
    pub fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    /// Binds `label` to the next instruction.
    pub fn bind(&mut self, label: Label) {
        self.items.push(Item::Bind(label));
    }

    /// `A = seccomp_data[offset]` (32 bits).
    pub fn load(&mut self, offset: u32) {
        self.items.push(Item::Stmt(LD_ABS, offset));
    }

    /// `A &= k`.
    pub fn and(&mut self, k: u32) {
        self.items.push(Item::Stmt(AND_K, k));
    }

    /// `return action`.
    pub fn ret(&mut self, action: u32) {
        self.items.push(Item::Stmt(RET, action));
    }

    /// Conditional jump (`code` is `JEQ`, `JGT` or `JGE` against `k`).
    fn jump(&mut self, code: u16, k: u32, yes: To, no: To) {
        self.items.push(Item::Jump(code, k, yes, no));
    }

    /// `if A == k goto yes else goto no`.
    pub fn jeq(&mut self, k: u32, yes: To, no: To) {
        self.jump(JEQ, k, yes, no);
    }

    /// `if A > k goto yes else goto no`.
    pub fn jgt(&mut self, k: u32, yes: To, no: To) {
        self.jump(JGT, k, yes, no);
    }

    /// `if A >= k goto yes else goto no`.
    pub fn jge(&mut self, k: u32, yes: To, no: To) {
        self.jump(JGE, k, yes, no);
    }

    /// Unconditional forward jump, any distance.
    pub fn ja(&mut self, to: Label) {
        self.items.push(Item::Ja(to));
    }

    /// Resolves labels into offsets.
    pub fn finish(self) -> Result<Vec<sock_filter>> {
        let mut at = vec![None; self.labels];
        let mut pc = 0usize;
        for item in &self.items {
            match item {
                Item::Bind(Label(l)) => at[*l] = Some(pc),
                _ => pc += 1,
            }
        }
        let offset = |from: usize, to: Label| -> Result<usize> {
            at[to.0]
                .and_then(|target| target.checked_sub(from + 1))
                .ok_or_else(|| Error::msg(format!("bpf: label {} unbound or backwards", to.0)))
        };
        let short = |from: usize, to: To| -> Result<u8> {
            match to {
                To::Next => Ok(0),
                To::Label(label) => u8::try_from(offset(from, label)?)
                    .map_err(|_| Error::msg("bpf: conditional jump longer than 255")),
            }
        };
        let mut program = Vec::with_capacity(pc);
        for item in &self.items {
            let pc = program.len();
            program.push(match *item {
                Item::Bind(_) => continue,
                Item::Stmt(code, k) => sock_filter {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                },
                Item::Jump(code, k, yes, no) => sock_filter {
                    code,
                    jt: short(pc, yes)?,
                    jf: short(pc, no)?,
                    k,
                },
                Item::Ja(to) => sock_filter {
                    code: JA,
                    jt: 0,
                    jf: 0,
                    k: u32::try_from(offset(pc, to)?)
                        .map_err(|_| Error::msg("bpf: program too long"))?,
                },
            });
        }
        if program.len() > libc::BPF_MAXINSNS as usize {
            return Err(Error::msg(format!(
                "bpf: {} instructions, the kernel takes at most {}",
                program.len(),
                libc::BPF_MAXINSNS
            )));
        }
        Ok(program)
    }
}

/// Compiles [`crate::profile`] into a filter for the native architecture.
///
/// Any other architecture (i386 through `int 0x80`) and the x32 ABI get EPERM: the real profile
/// allows them with the same list, but nothing in a 64-bit pod needs them and refusing them keeps
/// the filter one table.
pub fn runtime_default() -> Result<Vec<sock_filter>> {
    let mut rules: Vec<(c_long, Rule)> = syscalls::all()
        .map(|(name, nr)| (nr, profile::rule(name)))
        .collect();
    rules.sort_by_key(|(nr, _)| *nr);

    // Runs of consecutive numbers with the same rule, starting at 0; numbers podsim does not know
    // (gaps, anything above the table) get the default, as in the profile.
    let default = Rule::Errno(profile::DEFAULT_ERRNO);
    let mut runs: Vec<(u32, Rule)> = vec![(0, default)];
    let mut next = 0u32;
    for (nr, rule) in rules {
        let nr = u32::try_from(nr).map_err(|_| Error::msg(format!("bpf: syscall number {nr}")))?;
        if nr > next {
            push_run(&mut runs, next, default);
        }
        push_run(&mut runs, nr, rule);
        next = nr + 1;
    }
    push_run(&mut runs, next, default);

    let mut asm = Asm::default();
    let native = asm.label();
    asm.load(ARCH);
    asm.jeq(syscalls::AUDIT_ARCH, To::Label(native), To::Next);
    asm.ret(errno_action(libc::EPERM));
    asm.bind(native);
    asm.load(NR);
    #[cfg(target_arch = "x86_64")]
    {
        let not_x32 = asm.label();
        asm.jge(syscalls::X32_SYSCALL_BIT, To::Next, To::Label(not_x32));
        asm.ret(errno_action(libc::EPERM));
        asm.bind(not_x32);
    }
    search(&mut asm, &runs);
    asm.finish()
}

fn push_run(runs: &mut Vec<(u32, Rule)>, start: u32, rule: Rule) {
    match runs.last_mut() {
        Some((_, last)) if *last == rule => {}
        Some((last_start, last)) if *last_start == start => *last = rule,
        _ => runs.push((start, rule)),
    }
}

/// Emits a binary search over `runs` (sorted by start, first start <= A); A holds the number.
fn search(asm: &mut Asm, runs: &[(u32, Rule)]) {
    match runs {
        [] => asm.ret(errno_action(profile::DEFAULT_ERRNO)),
        [(_, rule)] => leaf(asm, *rule),
        _ => {
            let (low, high) = runs.split_at(runs.len() / 2);
            let (left, right) = (asm.label(), asm.label());
            asm.jge(high[0].0, To::Next, To::Label(left));
            asm.ja(right);
            asm.bind(left);
            search(asm, low);
            asm.bind(right);
            search(asm, high);
        }
    }
}

fn leaf(asm: &mut Asm, rule: Rule) {
    match rule {
        Rule::Allow => asm.ret(libc::SECCOMP_RET_ALLOW),
        Rule::Errno(errno) => asm.ret(errno_action(errno)),
        Rule::AllowIf(cmps) => {
            let allow = asm.label();
            for cmp in cmps {
                let fail = asm.label();
                compare(asm, cmp, allow, fail);
                asm.bind(fail);
            }
            asm.ret(errno_action(profile::DEFAULT_ERRNO));
            asm.bind(allow);
            asm.ret(libc::SECCOMP_RET_ALLOW);
        }
    }
}

/// Jumps to `yes` when the 64-bit comparison holds, to `no` otherwise (libseccomp's semantics:
/// high half first, then low half).
fn compare(asm: &mut Asm, cmp: &ArgCmp, yes: Label, no: Label) {
    let (low, high) = arg_halves(cmp.arg);
    let (value_hi, value_lo) = ((cmp.value >> 32) as u32, cmp.value as u32);
    let (yes, no) = (To::Label(yes), To::Label(no));
    asm.load(high);
    match cmp.op {
        Op::Eq => {
            asm.jeq(value_hi, To::Next, no);
            asm.load(low);
            asm.jeq(value_lo, yes, no);
        }
        Op::MaskedEq(mask) => {
            asm.and((mask >> 32) as u32);
            asm.jeq(value_hi, To::Next, no);
            asm.load(low);
            asm.and(mask as u32);
            asm.jeq(value_lo, yes, no);
        }
        Op::Gt => {
            asm.jgt(value_hi, yes, To::Next);
            asm.jeq(value_hi, To::Next, no);
            asm.load(low);
            asm.jgt(value_lo, yes, no);
        }
        Op::Lt => {
            asm.jgt(value_hi, no, To::Next);
            asm.jeq(value_hi, To::Next, yes);
            asm.load(low);
            asm.jge(value_lo, no, yes);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn runtime_default_fits_the_kernel_limit() {
        let program = super::runtime_default().unwrap_or_default();
        assert!(!program.is_empty());
        assert!(program.len() < 1024, "{} instructions", program.len());
    }
}
