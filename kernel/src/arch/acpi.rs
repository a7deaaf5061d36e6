//! Finding the CPUs: the ACPI MADT's local-APIC entries.

use core::ptr::NonNull;

use acpi::{
    AcpiHandler, AcpiTables, PhysicalMapping,
    madt::{Madt, MadtEntry},
};

use super::paging::phys_to_virt;

/// ACPI tables are read through the physical-memory window; nothing needs
/// mapping or unmapping.
#[derive(Clone, Copy)]
struct PhysicalWindow;

impl AcpiHandler for PhysicalWindow {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        let virtual_address = phys_to_virt(physical_address as u64) as *mut T;
        // SAFETY: the physical window maps all memory the firmware can point
        // at (below the window's limit), and the mapping lives for ever.
        unsafe { PhysicalMapping::new(physical_address, NonNull::new_unchecked(virtual_address), size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// A CPU the firmware lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessorEntry {
    /// Its local APIC id.
    pub apic_id: u32,
    /// ACPI processor UID.
    pub uid: u32,
}

/// Why the CPUs could not be found.
#[derive(Debug)]
pub enum AcpiError {
    /// The loader gave no RSDP.
    NoRsdp,
    /// The tables are malformed or missing (the acpi crate's verdict).
    Tables(acpi::AcpiError),
}

/// Calls `found` for every enabled (or online-capable) CPU in the MADT, in
/// table order.
pub fn for_each_processor(rsdp: Option<u64>, mut found: impl FnMut(ProcessorEntry)) -> Result<(), AcpiError> {
    let rsdp = rsdp.ok_or(AcpiError::NoRsdp)?;
    // SAFETY: the address came from the loader's start-info block, and the
    // handler maps through the physical window.
    let tables = unsafe { AcpiTables::from_rsdp(PhysicalWindow, rsdp as usize) }.map_err(AcpiError::Tables)?;
    let madt = tables.find_table::<Madt>().map_err(AcpiError::Tables)?;
    for entry in madt.get().entries() {
        match entry {
            MadtEntry::LocalApic(apic) => {
                let flags = apic.flags;
                // Bit 0: enabled; bit 1: online capable.
                if flags & 0b11 != 0 {
                    found(ProcessorEntry { apic_id: u32::from(apic.apic_id), uid: u32::from(apic.processor_id) });
                }
            }
            MadtEntry::LocalX2Apic(apic) => {
                let flags = apic.flags;
                if flags & 0b11 != 0 {
                    found(ProcessorEntry { apic_id: apic.x2apic_id, uid: apic.processor_uid });
                }
            }
            _ => {}
        }
    }
    Ok(())
}
