/*
 * The shadow stub: position-independent x86-64 code that vmi writes into a scratch
 * mapping (MAP_SHARED|MAP_ANONYMOUS, RWX) of a hijacked guest process.
 *
 *  bootstrap  runs in the hijacked process (the victim) on a stack inside the scratch
 *             region. It clones an intermediate child with exit_signal 0 (so the victim
 *             receives no SIGCHLD), reaps it with wait4(__WCLONE) and stops at
 *             bootstrap_done, where the host restores the victim.
 *  child1     clones the shadow and exits at once, so the shadow is re-parented to
 *             init (which reaps it when it exits) and the victim keeps no child.
 *  shadow     blocks signals, names itself, drops inherited fds and cwd, locks the
 *             scratch pages, opens its wake-up line if the host gave one, then loops:
 *             run the next batch when the doorbell word is ahead of the done word (by
 *             one, or two when the host rang the next batch early); after a
 *             batch or a wake-up by the line spin on the doorbell for C_SPIN TSC
 *             cycles (back-to-back batches answer in microseconds; the host lengthens
 *             the window while it is attached and shortens it when it leaves); then sleep: in ppoll on the wake-up line (a
 *             serial port the host writes a byte to: an interrupt wakes it at once)
 *             with a long timeout, or without a line in short sleeps that back off to
 *             C_IDLE_TS after C_IDLE_LOOPS idle rounds.
 *
 * Words the guest writes live on the control page, never on this code page: TCG
 * caches translated code, so code is written once, through the gdbstub, before it runs.
 * Layout constants must match src/shadow/layout.ts (checked by a unit test).
 */
        .intel_syntax noprefix

        .set CTL,          0x1000
        .set C_MARKER,     0x00
        .set C_DOORBELL,   0x08
        .set C_DONE,       0x10
        .set C_STATE,      0x18
        .set C_PID,        0x20
        .set C_COMMAND,    0x28
        .set C_SPIN,       0x38
        .set C_BOOT,       0x40
        .set C_SIZE,       0x48
        .set C_HEARTBEAT,  0x50
        .set C_TIMESPEC,   0x60
        .set C_SIGSET,     0x70
        .set C_NAME,       0x80
        .set C_ROOT,       0x90
        .set C_BATCHES,    0x98
        .set C_SETUP,      0xa0
        .set C_POLLFD,     0xa8                 /* struct pollfd {fd, events, revents} */
        .set C_WAKE_FD,    0xb0
        .set C_IDLE_LOOPS, 0xb8
        .set C_WAKE_PATH,  0xc0                 /* 64 bytes, empty: no wake-up line */
        .set C_IDLE_TS,    0x100                /* long sleep / ppoll timeout */
        .set C_TERMIOS,    0x110                /* 36-byte struct termios (TCGETS) */
        .set C_DRAIN,      0x140                /* 64 bytes: wake bytes read and dropped */
        .set C_WAKES,      0x180                /* count of wake-ups by the line */
        .set C_PPOLL_TS,   0x190                /* ppoll's copy of C_IDLE_TS: the kernel writes the time left back */
        .set C_SLOTS,      0x1a0                /* two batch slots {first entry, count}, 16 bytes each: */
                                                /* batch number N uses slot N & 1 */

        .set CHILD1_STACK, 0x6000
        .set SHADOW_STACK, 0x8000
        .set ENTRIES,      0x8000
        .set ENTRY_SIZE,   64
        .set MAX_CALLS,    2048
        .set RESULTS,      0x28000

        .set STATE_READY,  1
        .set STATE_BUSY,   2
        .set STATE_EXITING, 3
        .set STATE_SLEEPING, 4
        .set CMD_EXIT,     1

        .text
stub_start:

/* ---- victim side ---------------------------------------------------------- */
        .globl bootstrap
bootstrap:
        lea     rbx, [rip + stub_start]
        mov     eax, 56                         /* clone */
        xor     edi, edi                        /* flags 0: exit_signal 0 */
        lea     rsi, [rbx + CHILD1_STACK]
        xor     edx, edx
        xor     r10d, r10d
        xor     r8d, r8d
        syscall
        test    rax, rax
        jz      child1
        mov     [rbx + CTL + C_BOOT], rax
        js      bootstrap_done
        mov     rdi, rax
        mov     eax, 61                         /* wait4(child1, NULL, __WCLONE, NULL) */
        xor     esi, esi
        mov     edx, 0x80000000
        xor     r10d, r10d
        syscall
        .globl bootstrap_done
bootstrap_done:
        nop                                     /* host breakpoint: restore the victim */
        jmp     bootstrap_done

/* ---- intermediate child ----------------------------------------------------- */
child1:
        mov     eax, 56                         /* clone(SIGCHLD, shadow stack) */
        mov     edi, 17
        lea     rsi, [rbx + SHADOW_STACK]
        xor     edx, edx
        xor     r10d, r10d
        xor     r8d, r8d
        syscall
        test    rax, rax
        jz      shadow
        mov     eax, 60                         /* exit(0) */
        xor     edi, edi
        syscall
        jmp     child1

/* ---- the shadow ------------------------------------------------------------- */
shadow:
        xor     r12d, r12d                      /* r12 = setup error bits */
        mov     eax, 14                         /* rt_sigprocmask(SIG_BLOCK, all, NULL, 8) */
        xor     edi, edi
        lea     rsi, [rbx + CTL + C_SIGSET]
        xor     edx, edx
        mov     r10d, 8
        syscall
        mov     eax, 157                        /* prctl(PR_SET_NAME, name) */
        mov     edi, 15
        lea     rsi, [rbx + CTL + C_NAME]
        syscall
        mov     eax, 436                        /* close_range(0, ~0, 0): drop the victim's fds */
        xor     edi, edi
        mov     esi, -1
        xor     edx, edx
        syscall
        test    rax, rax
        jz      1f
        or      r12, 1
1:      mov     eax, 80                         /* chdir("/"): do not pin the victim's cwd */
        lea     rdi, [rbx + CTL + C_ROOT]
        syscall
        mov     eax, 149                        /* mlock(scratch, size): keep pages put */
        mov     rdi, rbx
        mov     rsi, [rbx + CTL + C_SIZE]
        syscall
        test    rax, rax
        jz      1f
        or      r12, 2
1:      mov     qword ptr [rbx + CTL + C_WAKE_FD], -1
        cmp     byte ptr [rbx + CTL + C_WAKE_PATH], 0
        je      2f
        mov     eax, 2                          /* open(path, O_RDWR|O_NOCTTY|O_NONBLOCK|O_CLOEXEC) */
        lea     rdi, [rbx + CTL + C_WAKE_PATH]
        mov     esi, 0x80902
        syscall
        mov     [rbx + CTL + C_WAKE_FD], rax
        test    rax, rax
        js      3f
        mov     [rbx + CTL + C_POLLFD], eax
        mov     dword ptr [rbx + CTL + C_POLLFD + 4], 1   /* POLLIN */
        mov     rdi, rax                        /* raw mode: one byte wakes, nothing echoes */
        mov     eax, 16                         /* ioctl(fd, TCGETS, termios) */
        mov     esi, 0x5401
        lea     rdx, [rbx + CTL + C_TERMIOS]
        syscall
        test    rax, rax
        jnz     3f
        and     dword ptr [rbx + CTL + C_TERMIOS + 0], ~0x5eb     /* iflag: no CR/NL maps, no XON */
        and     dword ptr [rbx + CTL + C_TERMIOS + 4], ~1         /* oflag: no OPOST */
        and     dword ptr [rbx + CTL + C_TERMIOS + 12], ~0x804b   /* lflag: no ICANON ECHO ISIG IEXTEN */
        mov     byte ptr [rbx + CTL + C_TERMIOS + 17 + 6], 1      /* VMIN */
        mov     byte ptr [rbx + CTL + C_TERMIOS + 17 + 5], 0      /* VTIME */
        mov     rdi, [rbx + CTL + C_WAKE_FD]
        mov     eax, 16                         /* ioctl(fd, TCSETS, termios) */
        mov     esi, 0x5402
        lea     rdx, [rbx + CTL + C_TERMIOS]
        syscall
        test    rax, rax
        jz      2f
3:      or      r12, 4                          /* wake-up line unusable: sleep instead */
        mov     qword ptr [rbx + CTL + C_WAKE_FD], -1
2:      mov     [rbx + CTL + C_SETUP], r12
        mov     eax, 39                         /* getpid */
        syscall
        mov     [rbx + CTL + C_PID], rax
        mov     qword ptr [rbx + CTL + C_STATE], STATE_READY
        xor     r14d, r14d                      /* r14 = TSC of the last batch or wake-up */
        xor     r13d, r13d                      /* r13 = idle rounds since the last batch */

        .globl shadow_loop
shadow_loop:
        inc     qword ptr [rbx + CTL + C_HEARTBEAT]
        cmp     qword ptr [rbx + CTL + C_COMMAND], CMD_EXIT
        je      shadow_exit
        mov     r15, [rbx + CTL + C_DOORBELL]
        sub     r15, [rbx + CTL + C_DONE]
        jnz     ring_seen
        rdtsc                                   /* spin while now - r14 < C_SPIN: re-read */
        shl     rdx, 32                         /* each round, so the host can shorten it */
        or      rax, rdx
        sub     rax, r14
        cmp     rax, [rbx + CTL + C_SPIN]
        jae     1f
        pause                                   /* still in the spin window */
        jmp     shadow_loop
1:      /* Announce the sleep, then look once more: a host that rang before seeing
           SLEEPING is answered now, one that sees SLEEPING pokes the line. */
        mov     qword ptr [rbx + CTL + C_STATE], STATE_SLEEPING
        mfence
        mov     r15, [rbx + CTL + C_DOORBELL]
        sub     r15, [rbx + CTL + C_DONE]
        jnz     ring_seen
        mov     rdi, [rbx + CTL + C_WAKE_FD]
        test    rdi, rdi
        js      2f
        mov     rax, [rbx + CTL + C_IDLE_TS]    /* fresh timeout each time: ppoll rewrites it */
        mov     [rbx + CTL + C_PPOLL_TS], rax
        mov     rax, [rbx + CTL + C_IDLE_TS + 8]
        mov     [rbx + CTL + C_PPOLL_TS + 8], rax
        mov     eax, 271                        /* ppoll(pollfd, 1, timeout, NULL, 8) */
        lea     rdi, [rbx + CTL + C_POLLFD]
        mov     esi, 1
        lea     rdx, [rbx + CTL + C_PPOLL_TS]
        xor     r10d, r10d
        mov     r8d, 8
        syscall
        test    rax, rax
        jle     4f
        inc     qword ptr [rbx + CTL + C_WAKES]
        rdtsc                                   /* woken by the host: a batch is coming */
        shl     rdx, 32
        or      rax, rdx
        mov     r14, rax
        mov     eax, 0                          /* read(fd, drain, 64): drop the wake bytes */
        mov     rdi, [rbx + CTL + C_WAKE_FD]
        lea     rsi, [rbx + CTL + C_DRAIN]
        mov     edx, 64
        syscall
        jmp     4f
2:      inc     r13                             /* no line: short sleeps, then long ones */
        lea     rdi, [rbx + CTL + C_TIMESPEC]
        cmp     r13, [rbx + CTL + C_IDLE_LOOPS]
        jb      3f
        lea     rdi, [rbx + CTL + C_IDLE_TS]
3:      mov     eax, 35                         /* nanosleep(ts, NULL) */
        xor     esi, esi
        syscall
4:      mov     qword ptr [rbx + CTL + C_STATE], STATE_READY
        jmp     shadow_loop

/*
 * Batch number N = C_DONE + 1 (never the doorbell's value: a host may ring the next
 * batch while this one runs, and each runs in turn). Its slot (N & 1) names its first
 * entry F and its count: entries F.. of 64 bytes at ENTRIES: nr, six args, a kind mask.
 * Bit j of the mask set: arg j is the index, within this batch, of an earlier call whose
 * result replaces it (an fd from openat used by read). Results go to RESULTS[F + i], so
 * two batches in different entries never touch each other's results.
 */
ring_seen:      /* r15 = doorbell - done: one batch rung, or two (the next one rung early) */
        cmp     r15, 2
        jbe     run_batch
        mov     rax, [rbx + CTL + C_DOORBELL]   /* anything else is no ring of ours: */
        mov     [rbx + CTL + C_DONE], rax       /* take it as done, run nothing */
        jmp     shadow_loop
run_batch:
        mov     qword ptr [rbx + CTL + C_STATE], STATE_BUSY
        mov     r15, [rbx + CTL + C_DONE]
        inc     r15
        mov     eax, r15d
        and     eax, 1
        shl     eax, 4
        mov     rbp, [rbx + CTL + C_SLOTS + rax]        /* rbp = first entry */
        mov     r12, [rbx + CTL + C_SLOTS + rax + 8]    /* r12 = count */
        mov     rax, MAX_CALLS
        cmp     rbp, rax
        jbe     1f
        mov     rbp, rax
1:      sub     rax, rbp                                /* room left after the first entry */
        cmp     r12, rax
        jbe     1f
        mov     r12, rax
1:      add     r12, rbp                                /* r12 = end, r13 = this call */
        mov     r13, rbp
next_call:
        cmp     r13, r12
        jae     batch_done
        mov     r14, r13
        shl     r14, 6
        lea     r14, [rbx + r14 + ENTRIES]

        .macro  LOADARG reg, idx
        mov     \reg, [r14 + 8 + 8 * \idx]
        bt      qword ptr [r14 + 56], \idx
        jnc     3f
        cmp     \reg, MAX_CALLS                 /* only earlier calls of this batch */
        jae     4f
        add     \reg, rbp
        cmp     \reg, r13
        jae     4f
        mov     \reg, [rbx + RESULTS + \reg * 8]
        jmp     3f
4:      mov     \reg, -22                       /* -EINVAL: bad reference */
3:
        .endm

        LOADARG rdi, 0
        LOADARG rsi, 1
        LOADARG rdx, 2
        LOADARG r10, 3
        LOADARG r8, 4
        LOADARG r9, 5
        inc     qword ptr [rbx + CTL + C_HEARTBEAT]   /* alive and working: a long batch */
        mov     rax, [r14]                            /* is not taken for a hung shadow */
        syscall
        mov     [rbx + RESULTS + r13 * 8], rax
        inc     r13
        jmp     next_call
batch_done:
        inc     qword ptr [rbx + CTL + C_BATCHES]
        mov     qword ptr [rbx + CTL + C_STATE], STATE_READY
        mov     [rbx + CTL + C_DONE], r15
        rdtsc                                   /* the spin window starts now */
        shl     rdx, 32
        or      rax, rdx
        mov     r14, rax
        xor     r13d, r13d
        .globl batch_end
batch_end:
        nop                                     /* host breakpoint (trap transport) */
        jmp     shadow_loop

shadow_exit:
        mov     qword ptr [rbx + CTL + C_STATE], STATE_EXITING
        .globl exit_point
exit_point:
        nop                                     /* host breakpoint (trap transport) */
        mov     eax, 231                        /* exit_group(0) */
        xor     edi, edi
        syscall
        jmp     exit_point

        .globl stub_end
stub_end:
