//! The first instructions: the PVH entry point and the switch to long mode.
//!
//! QEMU's `-kernel` loads this ELF image at its physical addresses, finds the
//! Xen `PHYS32_ENTRY` note, and enters `pvh_start32` in 32-bit protected mode
//! with paging off and `%ebx` holding the physical address of the
//! `hvm_start_info` block (see [`super::start_info`]). The code here zeroes
//! `.bss`, builds nothing at run time — the boot page tables are static data —
//! turns on long mode, and calls [`crate::boot_main`] on the higher-half boot
//! stack. Later, [`super::paging`] replaces these page tables with the final
//! kernel address space and the `.boot` pages are given back.
//!
//! Boot page tables (all 2 MiB pages, 4 page directories covering 4 GiB):
//! - PML4[0]   → identity map of the first 4 GiB (only while booting);
//! - PML4[256] → the same 4 GiB at the physical-memory window
//!   [`super::paging::PHYSMAP_BASE`];
//! - PML4[511] → PDPT entry 510 maps the first GiB at `0xffffffff80000000`,
//!   where the kernel is linked.

use core::arch::global_asm;

/// Size of the stack the bootstrap processor boots on.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

/// The stack `boot_main` first runs on; 16-byte aligned.
#[repr(C, align(4096))]
pub struct BootStack(pub [u8; BOOT_STACK_SIZE]);

/// Stack of the bootstrap processor until the task system gives it a guarded
/// one.
#[unsafe(no_mangle)]
pub static mut BOOT_STACK: BootStack = BootStack([0; BOOT_STACK_SIZE]);

// The PVH note: name "Xen", type 18 (XEN_ELFNOTE_PHYS32_ENTRY), a 4-byte
// physical entry address.
global_asm!(
    r#"
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long pvh_start32
    .balign 4
    .popsection
    "#
);

global_asm!(
    r#"
    .pushsection .boot.text, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    /* The first instruction: boot time is measured from here. */
    rdtsc
    cli
    cld
    mov esi, ebx
    mov ebx, edx
    mov ebp, eax

    /* Zero .bss (physical addresses; paging is off). */
    mov edi, offset __bss_start_phys
    mov ecx, offset __bss_end_phys
    sub ecx, edi
    xor eax, eax
    rep stosb
    mov edi, offset BOOT_TSC - {kernel_offset}
    mov [edi], ebp
    mov [edi + 4], ebx

    /* CR4.PAE | CR4.PGE */
    mov eax, cr4
    or eax, (1 << 5) | (1 << 7)
    mov cr4, eax

    mov eax, offset boot_pml4
    mov cr3, eax

    /* EFER.LME */
    mov ecx, 0xC0000080
    rdmsr
    or eax, 1 << 8
    wrmsr

    /* CR0.PG | CR0.WP | CR0.PE */
    mov eax, cr0
    or eax, (1 << 31) | (1 << 16) | 1
    mov cr0, eax

    lgdt [boot_gdt_pointer]
    mov eax, offset boot_start64
    push 0x08
    push eax
    retf

    .code64
boot_start64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax

    movabs rsp, offset BOOT_STACK + {stack_size}
    xor ebp, ebp
    mov edi, esi
    movabs rax, offset {boot_main}
    call rax
2:  cli
    hlt
    jmp 2b
    .popsection

    .pushsection .boot.data, "aw"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code, ring 0 */
    .quad 0x00cf92000000ffff    /* 0x10: data, ring 0 */
boot_gdt_end:
    .balign 4
    .word 0
boot_gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
    .popsection

    .pushsection .boot.page_tables, "aw"
    .balign 4096
    .global boot_pml4
boot_pml4:
    .quad boot_pdpt_low + 0x3
    .fill 255, 8, 0
    .quad boot_pdpt_low + 0x3
    .fill 254, 8, 0
    .quad boot_pdpt_high + 0x3
boot_pdpt_low:
    .quad boot_pd + 0x3
    .quad boot_pd + 0x1000 + 0x3
    .quad boot_pd + 0x2000 + 0x3
    .quad boot_pd + 0x3000 + 0x3
    .fill 508, 8, 0
boot_pdpt_high:
    .fill 510, 8, 0
    .quad boot_pd + 0x3
    .quad 0
boot_pd:
    .set page, 0
    .rept 2048
    .quad (page << 21) + 0x83
    .set page, page + 1
    .endr
    .popsection
    "#,
    stack_size = const BOOT_STACK_SIZE,
    kernel_offset = const super::paging::KERNEL_OFFSET,
    boot_main = sym crate::boot_main,
);
