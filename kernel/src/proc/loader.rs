//! The loader (Hypatia's "theon"): turns the program images carried in the
//! kernel image into [`Program`]s for the supervisor, then gives its own
//! memory back.
//!
//! The runner builds every program under `user/programs` and the kernel's
//! build script embeds each ELF file, page aligned, in the `.user_images`
//! section. At boot [`load_all`] parses each with `orrery-image` into a
//! minimal program: text and read-only data copied once into frames that
//! every process of the program maps shared and read-only, the initial data
//! kept as a template that each process copies privately, the sizes of its
//! zeroed data and stack, its entry point. The ELF files are then no longer
//! needed: their pages are unmapped from the kernel image and returned to
//! the frame allocator.

use alloc::{sync::Arc, vec::Vec};

use orrery_abi::{USER_IMAGE_END, USER_LOWEST};
use orrery_frames::Frame;
use orrery_image::{Image, ImageError, Limits, Segment};

use crate::{
    arch::{paging, smp},
    mm::frames,
};

/// A program embedded in the kernel image by the build.
pub struct EmbeddedProgram {
    /// Its name (the crate name under `user/programs`).
    pub name: &'static str,
    /// The ELF file.
    pub elf: &'static [u8],
}

/// Page alignment for the embedded files, so each starts on its own page.
#[repr(C, align(4096))]
pub struct Aligned<T: ?Sized>(pub T);

/// Every program the build embedded.
static EMBEDDED: &[EmbeddedProgram] = include!(concat!(env!("OUT_DIR"), "/user_images.rs"));

/// Pages of a segment, in frames, and where they go.
pub struct Pages {
    /// The address of the first page.
    pub address: u64,
    /// The frames, one per page.
    pub frames: Vec<Frame>,
}

/// A loaded program: what the supervisor creates processes from.
pub struct Program {
    /// Its name.
    pub name: &'static str,
    /// Address of its first instruction.
    pub entry: u64,
    /// Code, shared read-execute.
    pub text: Pages,
    /// Constants, shared read-only.
    pub rodata: Option<Pages>,
    /// Initial contents of the writable data, copied into each process.
    pub data_template: Option<Pages>,
    /// Bytes of stack each process gets.
    pub stack_size: u64,
}

impl Program {
    /// True when `address` is in the program's text or read-only data:
    /// pages every process of the program maps without owning them, whose
    /// frames the program keeps. A loaded program is never dropped (the
    /// loader's list lives as long as the kernel), so neither are they.
    pub fn image_holds(&self, address: u64) -> bool {
        let holds =
            |pages: &Pages| (pages.address..pages.address + pages.frames.len() as u64 * 4096).contains(&address);
        holds(&self.text) || self.rodata.as_ref().is_some_and(holds)
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let mut all = core::mem::take(&mut self.text.frames);
        all.extend(self.rodata.take().into_iter().flat_map(|pages| pages.frames));
        all.extend(self.data_template.take().into_iter().flat_map(|pages| pages.frames));
        all.into_iter().for_each(frames::deallocate);
    }
}

/// Why a program could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The ELF file is not an acceptable program.
    Image(&'static str, ImageError),
    /// No memory for its pages.
    OutOfMemory(&'static str),
}

/// What [`load_all`] did.
#[derive(Debug, Default)]
pub struct LoaderReport {
    /// Programs loaded.
    pub loaded: usize,
    /// Programs refused (with the reason logged).
    pub refused: usize,
    /// Frames the loaded programs hold (shared text and templates).
    pub program_frames: u64,
    /// Frames of ELF files given back to the allocator.
    pub released_frames: u64,
}

static PROGRAMS: spin::Once<Vec<Arc<Program>>> = spin::Once::new();

/// The limits every program must keep.
pub fn limits() -> Limits {
    Limits {
        lowest_address: USER_LOWEST,
        highest_address: USER_IMAGE_END,
        max_image_bytes: 64 << 20,
        default_stack_size: 64 * 1024,
        max_stack_size: 8 << 20,
    }
}

/// Copies a segment's pages into fresh frames.
fn copy_segment(segment: &Segment<'_>) -> Option<Pages> {
    let count = segment.page_count();
    let mut pages = Pages { address: segment.address, frames: Vec::with_capacity(count as usize) };
    for _ in 0..count {
        match frames::allocate_zeroed() {
            Some(frame) => pages.frames.push(frame),
            None => {
                pages.frames.drain(..).for_each(frames::deallocate);
                return None;
            }
        }
    }
    // Copy the file bytes, page by page, at their offset from the first page.
    let mut offset = segment.bytes_offset as usize;
    let mut source = segment.bytes;
    while !source.is_empty() {
        let page = offset / 4096;
        let within = offset % 4096;
        let chunk = source.len().min(4096 - within);
        let destination = frames::frame_pointer(pages.frames[page]);
        // SAFETY: the frame is freshly allocated for this program and mapped
        // through the physical window; `within + chunk <= 4096`.
        unsafe { core::ptr::copy_nonoverlapping(source.as_ptr(), destination.add(within), chunk) };
        offset += chunk;
        source = &source[chunk..];
    }
    Some(pages)
}

fn load(embedded: &EmbeddedProgram) -> Result<Program, LoadError> {
    let image: Image<'_> =
        orrery_image::parse(embedded.elf, &limits()).map_err(|error| LoadError::Image(embedded.name, error))?;
    let out_of_memory = || LoadError::OutOfMemory(embedded.name);
    let text = copy_segment(&image.text).ok_or_else(out_of_memory)?;
    let rodata = match &image.rodata {
        Some(segment) => Some(copy_segment(segment).ok_or_else(out_of_memory)?),
        None => None,
    };
    let data_template = match &image.data {
        Some(segment) => Some(copy_segment(segment).ok_or_else(out_of_memory)?),
        None => None,
    };
    Ok(Program { name: embedded.name, entry: image.entry, text, rodata, data_template, stack_size: image.stack_size })
}

unsafe extern "C" {
    static __user_images_start: u8;
    static __user_images_end: u8;
}

/// Loads every embedded program, then returns the ELF files' pages to the
/// frame allocator. Runs once, at boot.
pub fn load_all() -> LoaderReport {
    let mut report = LoaderReport::default();
    let mut programs = Vec::new();
    for embedded in EMBEDDED {
        match load(embedded) {
            Ok(program) => {
                report.program_frames += program.text.frames.len() as u64
                    + program.rodata.as_ref().map_or(0, |pages| pages.frames.len() as u64)
                    + program.data_template.as_ref().map_or(0, |pages| pages.frames.len() as u64);
                report.loaded += 1;
                programs.push(Arc::new(program));
            }
            Err(error) => {
                log::error!("loader: program refused: {error:?}");
                report.refused += 1;
            }
        }
    }
    PROGRAMS.call_once(|| programs);
    report.released_frames = release_embedded_files();
    report
}

/// Unmaps the `.user_images` pages from the kernel image on every CPU and
/// gives their frames back.
fn release_embedded_files() -> u64 {
    let start = &raw const __user_images_start as u64;
    let end = &raw const __user_images_end as u64;
    if end <= start {
        return 0;
    }
    let mut address = start;
    while address < end {
        // SAFETY: the section holds only the embedded files, which nothing
        // uses after `load_all` copied what it needed.
        let _ = unsafe { paging::unmap_kernel_page(address) };
        address += paging::PAGE_SIZE;
    }
    smp::flush_kernel_range(start..end);
    let first = Frame::containing(start - paging::KERNEL_OFFSET);
    frames::release_boot_frames(first, (end - start) / paging::PAGE_SIZE)
}

/// The loaded programs (the supervisor's images), in build order.
pub fn programs() -> &'static [Arc<Program>] {
    PROGRAMS.get().map_or(&[], Vec::as_slice)
}

/// The program called `name`.
pub fn program(name: &str) -> Option<Arc<Program>> {
    programs().iter().find(|program| program.name == name).cloned()
}
