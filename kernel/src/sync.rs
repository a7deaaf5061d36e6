//! Locks for kernel state shared between CPUs and interrupt handlers.
//!
//! [`SpinLock`] turns interrupts off on the local CPU while it is held, so an
//! interrupt handler on the same CPU can never spin on a lock its own CPU
//! holds, and the holder cannot be preempted (the timer tick is an
//! interrupt). Interrupts come back on only when the outermost guard drops.

use core::{
    cell::UnsafeCell,
    ops::{Deref, DerefMut},
    sync::atomic::{AtomicBool, Ordering},
};

use crate::arch::interrupts;

/// A test-and-test-and-set lock that masks interrupts while held.
pub struct SpinLock<T: ?Sized> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `value` to one holder at a time, so
// sharing the lock between CPUs is sound whenever moving `T` between them is.
unsafe impl<T: ?Sized + Send> Sync for SpinLock<T> {}
// SAFETY: as above; the lock owns its value.
unsafe impl<T: ?Sized + Send> Send for SpinLock<T> {}

/// Access to a [`SpinLock`]'s value; unlocks and restores interrupts on drop.
pub struct SpinLockGuard<'a, T: ?Sized> {
    lock: &'a SpinLock<T>,
    interrupts: interrupts::SavedState,
}

impl<T> SpinLock<T> {
    /// A new, unlocked lock.
    pub const fn new(value: T) -> Self {
        Self { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }
}

impl<T: ?Sized> SpinLock<T> {
    /// Waits for the lock, with interrupts off on this CPU.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        let interrupts = interrupts::save_and_disable();
        while self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            while self.locked.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        }
        SpinLockGuard { lock: self, interrupts }
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T>> {
        let interrupts = interrupts::save_and_disable();
        if self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            Some(SpinLockGuard { lock: self, interrupts })
        } else {
            interrupts::restore(interrupts);
            None
        }
    }

    /// True while someone holds the lock (for assertions and diagnostics).
    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }

    /// Releases a lock whose holder will never release it.
    ///
    /// # Safety
    /// Only for the panic path: the holder must be known to never run again
    /// (it is the panicking CPU itself, or a CPU that has been stopped), and
    /// no guard of this lock may be used afterwards.
    pub unsafe fn force_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

impl<T: ?Sized> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the lock is held, so no other
        // reference to the value exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T: ?Sized> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only access.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T: ?Sized> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
        interrupts::restore(self.interrupts);
    }
}
