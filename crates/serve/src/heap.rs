//! The process heap: freed tensor memory stays in the process for the next batch.

/// Keeps freed heap memory in the process instead of handing it back to the kernel.
///
/// glibc's allocator maps blocks above 128 KiB straight from the kernel and trims the
/// top of its heap on free, so a batch's input and intermediate tensors come back as
/// fresh pages every time, each page a fault the kernel must fill with zeros. On the
/// 2-core VM of `bench/onnx_throughput.sh` that was a third of a 256-image ONNX batch.
/// With blocks up to 32 MiB served from the heap and the heap trimmed only above
/// 512 MiB of free space at its top, the next batch reuses warm pages, as the arena
/// allocators of onnxruntime and PyTorch do. The process then keeps its peak heap.
///
/// Call it once, early in `main`. It changes nothing on other allocators.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; glibc takes its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    /// Bytes in blocks the allocator mapped on their own, over all its arenas.
    fn mapped_alone() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        unsafe { libc::mallinfo2() }.hblkhd
    }

    /// Without the setting an 8 MiB block is mapped on its own (and unmapped on free, back
    /// to the kernel); with it the block comes from the heap. The counter of separately
    /// mapped bytes tells, and unlike the heap's free bytes it does not move when tests on
    /// other threads allocate small blocks meanwhile.
    #[test]
    fn a_freed_large_block_stays_in_the_process() {
        super::retain_freed_memory();
        let before = mapped_alone();
        let block = std::hint::black_box(vec![1u8; 8 << 20]);
        let during = mapped_alone();
        drop(block);
        assert!(
            during < before + (8 << 20),
            "the block was mapped on its own: {before} then {during} bytes"
        );
    }
}
