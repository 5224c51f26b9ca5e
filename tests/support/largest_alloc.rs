//! A global allocator that forwards to the system's and notes, per
//! thread, the largest single request since the thread last asked: what a
//! test needs to show that an input cannot make a decoder allocate what a
//! length field claims rather than what is there.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct LargestAllocation;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the allocator also runs while a thread's locals are torn down.
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

/// The largest single allocation this thread asked for since the last call.
pub fn take_largest_allocation() -> usize {
    LARGEST.try_with(|largest| largest.replace(0)).unwrap_or(0)
}

// SAFETY: forwards every call unchanged to the system allocator; noting a
// size touches only a thread-local `Cell` and never allocates.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}
