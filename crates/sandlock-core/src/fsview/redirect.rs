//! Restarting `chdir` and `execve` with the HOST path in place of the virtual one.
//!
//! Only the sandbox can change its own working directory or replace its own program, and user
//! notification cannot change a syscall's arguments. So the supervisor makes the kernel restart
//! the call with new arguments, through `ptrace` of the one thread that made it (tracing one's
//! own descendants is allowed in a RuntimeDefault pod):
//! 1. `PTRACE_SEIZE` the thread (it is blocked in the notification), `PTRACE_INTERRUPT` it, and
//!    answer the notification with `-ERESTARTNOINTR`. On its way back to user mode the thread
//!    stops for us. (Before Linux 6.0, or before the supervisor picked the notification up, the
//!    interrupt itself ends the wait with `-ERESTARTSYS`, and the answer finds nobody: the thread
//!    stops all the same.)
//! 2. At the stop, the thread's memory gets the new strings in a scratch area of its own: an
//!    anonymous mapping made by running one `mmap` in the thread (its registers set for it, the
//!    `syscall` instruction it just left stepped once, all signals blocked meanwhile), kept per
//!    thread and recognised later by a random token. Nothing is written to the caller's buffers
//!    or below its stack pointer: the caller's string may be shorter than the new one, or
//!    read-only, and the memory under the stack pointer may be another thread's (Go runs system
//!    calls on small goroutine stacks).
//! 3. The registers are set to run the same system call again with the new pointers (the
//!    instruction pointer back on the `syscall` instruction, no restart pending), and the thread
//!    is detached. The call runs again, is notified again with a path outside the view, and is
//!    left to the kernel, which resolves it under Landlock.
//!
//! A signal that arrives meanwhile stays pending while the thread is stopped, and is delivered
//! after the detach: its handler runs first, and the call runs when it returns. Other threads of
//! the process keep running; they can only change the caller's own memory. If anything fails at
//! the stop, the thread's call returns that error instead. If the thread cannot be traced (Yama
//! `ptrace_scope` 2 or 3, or 1 for a process reparented away from the supervisor; a process that
//! made itself non-dumpable), the call fails with `EPERM`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::supervisor::notify::{Listener, Notification, read_mem, write_mem};

/// `ERESTARTNOINTR`: the kernel restarts the call on the way out, whatever signal handler runs.
const ERESTARTNOINTR: i32 = 513;
/// Scratch areas are at least this big (a path, and room for a script's arguments).
const SCRATCH_MIN: usize = 8192;
/// Threads remembered (the oldest are forgotten; their areas stay mapped in the sandbox).
const KEEP_THREADS: usize = 4096;
/// How long the thread may take to reach the stop.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// Most `argv` entries carried over to a script's interpreter.
const MAX_ARGS: usize = 1 << 17;

/// What the supervisor remembers between restarts: each thread's scratch area.
#[derive(Debug)]
pub(crate) struct Scratch {
    areas: HashMap<u32, (u64, usize)>,
    token: [u8; 16],
}

impl Default for Scratch {
    fn default() -> Scratch {
        let mut token = [0u8; 16];
        // SAFETY: getrandom writes at most `token.len()` bytes. A token of zeros (no entropy yet)
        // still works: it only has to differ from what the program keeps at that address.
        unsafe { libc::getrandom(token.as_mut_ptr().cast(), token.len(), 0) };
        Scratch {
            areas: HashMap::new(),
            token,
        }
    }
}

/// Lays out the new strings: given the address they will be written at, the bytes and the
/// arguments to set (index, value).
pub(crate) type Layout<'a> = &'a dyn Fn(u64) -> Result<(Vec<u8>, Vec<(usize, u64)>), i32>;

/// `ptrace(2)` as a raw system call. `req` is one of libc's `PTRACE_*` constants, whose type is
/// `c_uint` with glibc and `c_int` with musl.
fn ptrace(
    req: impl Into<libc::c_long>,
    tid: libc::pid_t,
    addr: usize,
    data: usize,
) -> Result<i64, i32> {
    let req: libc::c_long = req.into();
    // SAFETY: the requests used here read or write at most the buffers their callers pass.
    let r = unsafe { libc::syscall(libc::SYS_ptrace, req, tid, addr, data) };
    if r < 0 {
        Err(crate::sys::errno())
    } else {
        Ok(r)
    }
}

/// The registers this module touches, for the architectures sandlock runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Regs {
    /// Instruction pointer.
    pub(crate) pc: u64,
    /// The syscall number register.
    pub(crate) nr: u64,
    /// The return value register.
    pub(crate) ret: u64,
    /// The six argument registers.
    pub(crate) args: [u64; 6],
}

// Compiled on every architecture, like `aarch64`; used on x86_64.
/// x86_64: `syscall` is `0f 05`, the number in rax (and orig_rax, which says a restart is due
/// when it is not -1), arguments in rdi, rsi, rdx, r10, r8, r9, the result in rax.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) mod x86_64 {
    use super::Regs;

    pub(crate) const SYSCALL_LEN: u64 = 2;
    pub(crate) const SYS_MMAP: u64 = 9;

    /// `user_regs_struct`, as `PTRACE_GETREGS` fills it.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default)]
    pub(crate) struct Raw {
        pub(crate) r15: u64,
        pub(crate) r14: u64,
        pub(crate) r13: u64,
        pub(crate) r12: u64,
        pub(crate) rbp: u64,
        pub(crate) rbx: u64,
        pub(crate) r11: u64,
        pub(crate) r10: u64,
        pub(crate) r9: u64,
        pub(crate) r8: u64,
        pub(crate) rax: u64,
        pub(crate) rcx: u64,
        pub(crate) rdx: u64,
        pub(crate) rsi: u64,
        pub(crate) rdi: u64,
        pub(crate) orig_rax: u64,
        pub(crate) rip: u64,
        pub(crate) cs: u64,
        pub(crate) eflags: u64,
        pub(crate) rsp: u64,
        pub(crate) ss: u64,
        pub(crate) fs_base: u64,
        pub(crate) gs_base: u64,
        pub(crate) ds: u64,
        pub(crate) es: u64,
        pub(crate) fs: u64,
        pub(crate) gs: u64,
    }

    /// Whether the two bytes before `pc` are the `syscall` instruction.
    pub(crate) fn after_syscall(code_before_pc: &[u8]) -> bool {
        code_before_pc == [0x0f, 0x05]
    }

    pub(crate) fn get(r: &Raw) -> Regs {
        Regs {
            pc: r.rip,
            nr: r.orig_rax,
            ret: r.rax,
            args: [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9],
        }
    }

    /// `r` made to run syscall `nr` with `args` at the `syscall` instruction before `after`, with
    /// no restart of the interrupted call pending.
    pub(crate) fn set_call(r: &mut Raw, after: u64, nr: u64, args: [u64; 6]) {
        r.rip = after - SYSCALL_LEN;
        r.rax = nr;
        r.orig_rax = u64::MAX;
        [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9] = args;
    }

    /// `r` made to return `value` from the call it is in, with no restart pending.
    pub(crate) fn set_return(r: &mut Raw, value: i64) {
        r.rax = value as u64;
        r.orig_rax = u64::MAX;
    }
}

// Compiled on every architecture, so that the build machines type-check and test it; used on
// aarch64.
/// aarch64: `svc #0` is `d4000001`, the number in x8, arguments in x0-x5, the result in x0 (over
/// the first argument). The kernel rewinds the pc to the `svc` and puts the first argument back
/// before a ptrace stop when the call is to be restarted, so where the `svc` is is read from the
/// code: at the pc (rewound) or just before it.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(crate) mod aarch64 {
    use super::Regs;

    pub(crate) const SVC: [u8; 4] = 0xd400_0001u32.to_le_bytes();
    pub(crate) const SYS_MMAP: u64 = 222;

    /// `user_pt_regs`, as `PTRACE_GETREGSET(NT_PRSTATUS)` fills it.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default)]
    pub(crate) struct Raw {
        pub(crate) regs: [u64; 31],
        pub(crate) sp: u64,
        pub(crate) pc: u64,
        pub(crate) pstate: u64,
    }

    /// Where the `svc` instruction is, given the 8 bytes of code from `pc - 4`.
    pub(crate) fn svc_at(pc: u64, code: &[u8]) -> Option<u64> {
        if code.get(4..8) == Some(&SVC[..]) {
            Some(pc)
        } else if code.get(0..4) == Some(&SVC[..]) {
            Some(pc - 4)
        } else {
            None
        }
    }

    pub(crate) fn get(r: &Raw) -> Regs {
        Regs {
            pc: r.pc,
            nr: r.regs[8],
            ret: r.regs[0],
            args: [
                r.regs[0], r.regs[1], r.regs[2], r.regs[3], r.regs[4], r.regs[5],
            ],
        }
    }

    /// `r` made to run syscall `nr` with `args` at the `svc` at `svc`.
    pub(crate) fn set_call(r: &mut Raw, svc: u64, nr: u64, args: [u64; 6]) {
        r.pc = svc;
        r.regs[8] = nr;
        r.regs[..6].copy_from_slice(&args);
    }

    /// `r` made to return `value` from the call, resuming after the `svc` at `svc`.
    pub(crate) fn set_return(r: &mut Raw, svc: u64, value: i64) {
        r.pc = svc + 4;
        r.regs[0] = value as u64;
    }
}

/// One stopped thread and its registers.
struct Stopped {
    tid: libc::pid_t,
    #[cfg(target_arch = "x86_64")]
    raw: x86_64::Raw,
    #[cfg(target_arch = "aarch64")]
    raw: aarch64::Raw,
    /// Address of the system call instruction the thread stopped after.
    insn: u64,
}

#[cfg(target_arch = "x86_64")]
impl Stopped {
    fn read(tid: libc::pid_t) -> Result<Stopped, i32> {
        let mut raw = x86_64::Raw::default();
        ptrace(
            libc::PTRACE_GETREGS,
            tid,
            0,
            &mut raw as *mut x86_64::Raw as usize,
        )?;
        let code =
            read_mem(tid as u32, raw.rip - x86_64::SYSCALL_LEN, 2).map_err(|_| libc::EFAULT)?;
        if !x86_64::after_syscall(&code) {
            return Err(libc::ENOSYS);
        }
        Ok(Stopped {
            tid,
            insn: raw.rip - x86_64::SYSCALL_LEN,
            raw,
        })
    }

    fn write(&self) -> Result<(), i32> {
        ptrace(
            libc::PTRACE_SETREGS,
            self.tid,
            0,
            &self.raw as *const x86_64::Raw as usize,
        )
        .map(|_| ())
    }

    fn regs(&self) -> Regs {
        x86_64::get(&self.raw)
    }

    fn set_call(&mut self, nr: u64, args: [u64; 6]) {
        x86_64::set_call(&mut self.raw, self.insn + x86_64::SYSCALL_LEN, nr, args);
    }

    fn set_return(&mut self, value: i64) {
        x86_64::set_return(&mut self.raw, value);
    }

    const SYS_MMAP: u64 = x86_64::SYS_MMAP;
}

#[cfg(target_arch = "aarch64")]
impl Stopped {
    fn regset(tid: libc::pid_t, raw: &mut aarch64::Raw, set: bool) -> Result<(), i32> {
        const NT_PRSTATUS: usize = 1;
        let mut iov = libc::iovec {
            iov_base: (raw as *mut aarch64::Raw).cast(),
            iov_len: std::mem::size_of::<aarch64::Raw>(),
        };
        let req = if set {
            libc::PTRACE_SETREGSET
        } else {
            libc::PTRACE_GETREGSET
        };
        ptrace(req, tid, NT_PRSTATUS, &mut iov as *mut libc::iovec as usize).map(|_| ())
    }

    fn read(tid: libc::pid_t) -> Result<Stopped, i32> {
        let mut raw = aarch64::Raw::default();
        Self::regset(tid, &mut raw, false)?;
        let code = read_mem(tid as u32, raw.pc - 4, 8).map_err(|_| libc::EFAULT)?;
        let insn = aarch64::svc_at(raw.pc, &code).ok_or(libc::ENOSYS)?;
        Ok(Stopped { tid, raw, insn })
    }

    fn write(&self) -> Result<(), i32> {
        let mut raw = self.raw;
        Self::regset(self.tid, &mut raw, true)
    }

    fn regs(&self) -> Regs {
        aarch64::get(&self.raw)
    }

    fn set_call(&mut self, nr: u64, args: [u64; 6]) {
        aarch64::set_call(&mut self.raw, self.insn, nr, args);
    }

    fn set_return(&mut self, value: i64) {
        aarch64::set_return(&mut self.raw, self.insn, value);
    }

    const SYS_MMAP: u64 = aarch64::SYS_MMAP;
}

/// How a wait for the traced thread ended.
enum Waited {
    Stopped,
    Gone,
}

/// Waits for `tid` to be in a ptrace stop. `WNOWAIT`, so that the exit of the sandbox's main
/// process (our own child) is still there for the supervisor to reap through its pidfd; polled,
/// so that a host thread that steals the report with `waitpid(-1)` cannot leave us blocked (the
/// thread's state in `/proc` says it stopped all the same).
fn wait_stop(tid: libc::pid_t) -> Waited {
    let t0 = Instant::now();
    let mut pause = Duration::from_micros(5);
    loop {
        // SAFETY: siginfo_t is plain data.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes one siginfo_t.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                tid as libc::id_t,
                &mut info,
                libc::WSTOPPED | libc::WEXITED | libc::WNOHANG | libc::WNOWAIT | libc::__WALL,
            )
        };
        // SAFETY: si_pid is valid for the CLD_* reports waitid gives.
        let pid = unsafe { info.si_pid() };
        if r == 0 && pid == tid {
            return match info.si_code {
                libc::CLD_TRAPPED | libc::CLD_STOPPED => Waited::Stopped,
                _ => Waited::Gone,
            };
        }
        if r < 0 && crate::sys::errno() == libc::ECHILD {
            return Waited::Gone;
        }
        match std::fs::read_to_string(format!("/proc/{tid}/stat")) {
            Ok(s) => {
                let state = s.rfind(')').and_then(|i| s.get(i + 2..i + 3));
                if state == Some("t") {
                    return Waited::Stopped;
                }
            }
            Err(_) => return Waited::Gone,
        }
        if t0.elapsed() > STOP_WAIT {
            return Waited::Gone;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

impl Scratch {
    /// A scratch area of at least `len` bytes in the stopped thread, its token written.
    fn area(&mut self, t: &mut Stopped, len: usize) -> Result<u64, i32> {
        let tid = t.tid as u32;
        if let Some((addr, cap)) = self.areas.get(&tid).copied() {
            let ours = read_mem(tid, addr, 16).is_ok_and(|b| b == self.token);
            if ours && cap >= len {
                return Ok(addr);
            }
            self.areas.remove(&tid);
        }
        let cap = len.max(SCRATCH_MIN).next_multiple_of(4096);
        let addr = inject_mmap(t, cap)?;
        write_mem(tid, addr, &self.token)?;
        if self.areas.len() >= KEEP_THREADS {
            self.areas.clear();
        }
        self.areas.insert(tid, (addr, cap));
        Ok(addr)
    }
}

/// Runs `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)` in the
/// stopped thread, with every signal blocked so that no handler runs in between, and leaves it
/// stopped where it was.
fn inject_mmap(t: &mut Stopped, len: usize) -> Result<u64, i32> {
    let saved = t.raw;
    let mut mask: u64 = 0;
    ptrace(
        libc::PTRACE_GETSIGMASK as libc::c_uint,
        t.tid,
        8,
        &mut mask as *mut u64 as usize,
    )?;
    let all: u64 = !0;
    ptrace(
        libc::PTRACE_SETSIGMASK as libc::c_uint,
        t.tid,
        8,
        &all as *const u64 as usize,
    )?;
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    t.set_call(Stopped::SYS_MMAP, [0, len as u64, prot, flags, u64::MAX, 0]);
    let result = t
        .write()
        .and_then(|()| ptrace(libc::PTRACE_SINGLESTEP, t.tid, 0, 0))
        .and_then(|_| match wait_stop(t.tid) {
            Waited::Stopped => Stopped::read(t.tid),
            Waited::Gone => Err(libc::ESRCH),
        });
    let restore = ptrace(
        libc::PTRACE_SETSIGMASK as libc::c_uint,
        t.tid,
        8,
        &mask as *const u64 as usize,
    );
    let after = result?;
    restore?;
    let regs = after.regs();
    if after.insn != t.insn {
        return Err(libc::EINTR);
    }
    t.raw = saved;
    let addr = regs.ret as i64;
    if (-4095..0).contains(&addr) {
        return Err(-addr as i32);
    }
    Ok(addr as u64)
}

/// Makes the thread of notification `n` run its system call again with the arguments `layout`
/// gives. Answers the notification in every case but an `Err` (then nothing was done and the
/// caller answers with that errno).
pub(crate) fn restart(
    l: &Listener,
    n: &Notification,
    st: &mut Scratch,
    layout: Layout<'_>,
) -> Result<(), i32> {
    let tid = n.pid as libc::pid_t;
    const PTRACE_SEIZE: libc::c_uint = 0x4206;
    const PTRACE_INTERRUPT: libc::c_uint = 0x4207;
    ptrace(PTRACE_SEIZE, tid, 0, 0).map_err(|_| libc::EPERM)?;
    if ptrace(PTRACE_INTERRUPT, tid, 0, 0).is_err() {
        // Gone already: nothing to answer.
        return Ok(());
    }
    // The thread was still in its notification after we attached: it is the caller (a thread
    // killed meanwhile would have made the notification invalid, and its number free).
    let ours = l.id_valid(n.id);
    l.deny(n.id, ERESTARTNOINTR);
    if !matches!(wait_stop(tid), Waited::Stopped) {
        return Ok(());
    }
    let mut t = match Stopped::read(tid) {
        Ok(t) => t,
        Err(_) => {
            let _ = ptrace(libc::PTRACE_DETACH, tid, 0, 0);
            return Ok(());
        }
    };
    if !ours {
        let _ = ptrace(libc::PTRACE_DETACH, tid, 0, 0);
        return Ok(());
    }
    let outcome = (|| -> Result<(), i32> {
        let (probe, _) = layout(0)?;
        let addr = st.area(&mut t, probe.len() + 16)?;
        let (bytes, set) = layout(addr + 16)?;
        write_mem(tid as u32, addr + 16, &bytes)?;
        let mut args = n.args;
        for (i, v) in set {
            args[i] = v;
        }
        t.set_call(n.nr as u64, args);
        Ok(())
    })();
    if let Err(e) = outcome {
        t.set_return(-i64::from(e));
    }
    let _ = t.write();
    let _ = ptrace(libc::PTRACE_DETACH, tid, 0, 0);
    Ok(())
}

/// The NULL-terminated pointer array at `addr` in process `pid` (`argv`): the pointers, without
/// the NULL. A NULL array is empty, as for `execve`.
pub(crate) fn read_ptrs(pid: u32, addr: u64) -> Result<Vec<u64>, i32> {
    let mut out = Vec::new();
    if addr == 0 {
        return Ok(out);
    }
    let mut at = addr;
    loop {
        let chunk = (4096 - at % 4096) as usize;
        let bytes = read_mem(pid, at, chunk).map_err(|_| libc::EFAULT)?;
        if bytes.len() < 8 {
            return Err(libc::EFAULT);
        }
        for w in bytes.chunks_exact(8) {
            let p = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            if p == 0 {
                return Ok(out);
            }
            out.push(p);
            if out.len() > MAX_ARGS {
                return Err(libc::E2BIG);
            }
        }
        at += (bytes.len() - bytes.len() % 8) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_64_restarts_at_the_syscall_with_no_restart_pending() {
        let mut r = x86_64::Raw {
            rip: 0x1002,
            rax: (-513i64) as u64,
            orig_rax: 80,
            rdi: 0xaaaa,
            ..Default::default()
        };
        assert!(x86_64::after_syscall(&[0x0f, 0x05]));
        assert!(!x86_64::after_syscall(&[0xcd, 0x80]));
        x86_64::set_call(&mut r, 0x1002, 80, [0xbbbb, 0, 0, 0, 0, 0]);
        assert_eq!(
            (r.rip, r.rax, r.orig_rax, r.rdi),
            (0x1000, 80, u64::MAX, 0xbbbb)
        );
        x86_64::set_return(&mut r, -2);
        assert_eq!((r.rax as i64, r.orig_rax), (-2, u64::MAX));
    }

    #[test]
    fn aarch64_finds_the_svc_whether_or_not_the_kernel_rewound() {
        let mut code = [0u8; 8];
        code[4..].copy_from_slice(&aarch64::SVC);
        // Rewound: the svc is at the pc.
        assert_eq!(aarch64::svc_at(0x2000, &code), Some(0x2000));
        let mut code = [0u8; 8];
        code[..4].copy_from_slice(&aarch64::SVC);
        assert_eq!(aarch64::svc_at(0x2004, &code), Some(0x2000));
        assert_eq!(aarch64::svc_at(0x2004, &[0; 8]), None);
        let mut r = aarch64::Raw::default();
        aarch64::set_call(&mut r, 0x2000, 49, [7, 8, 0, 0, 0, 0]);
        assert_eq!((r.pc, r.regs[8], r.regs[0], r.regs[1]), (0x2000, 49, 7, 8));
        assert_eq!(aarch64::get(&r).args[1], 8);
        aarch64::set_return(&mut r, 0x2000, -1);
        assert_eq!((r.pc, r.regs[0] as i64), (0x2004, -1));
    }

    #[test]
    fn a_pointer_array_ends_at_null() {
        let a: [u64; 3] = [0x10, 0x20, 0];
        let me = std::process::id();
        assert_eq!(read_ptrs(me, a.as_ptr() as u64).unwrap(), vec![0x10, 0x20]);
        assert!(read_ptrs(me, 0).unwrap().is_empty());
    }
}
